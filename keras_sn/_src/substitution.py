"""Runs a layer with tensors in place of some of its variables.

The mechanism both wrappers share: `SpectralNormalization` runs the wrapped
layer with ``W / sigma`` and `WeightNormalization` with ``g * V / ||V||``,
as tensors, so that gradients reach the raw variables through the
reparametrization and the variables themselves are never written.
"""

import keras

from keras_sn import _compat


def call_with(layer, substitutions, inputs, **kwargs):
    """`layer(inputs, **kwargs)` with `substitutions` for its variables.

    Args:
        layer: The wrapped layer.
        substitutions: List of `(variable, tensor)`, each tensor in the
            variable's dtype (Keras autocasts it on read, as the variable).
        inputs: The layer's inputs.
        **kwargs: Call arguments passed on (e.g. `training`).

    Returns:
        The layer's outputs. The layer's other state updates (e.g. a
        `BatchNormalization` inside a wrapped block) and losses (an activity
        regularizer) are passed on as if it had run unwrapped.
    """
    # `keras.StatelessScope` substitutes the values, for any layer, on every
    # backend, without re-implementing its call. Scopes do not chain: carry
    # the outer scope's values of the layer's other variables into ours.
    outer = _compat.get_stateless_scope()
    substituted = {id(variable) for variable, _ in substitutions}
    mapping = list(substitutions)
    if outer is not None:
        for variable in layer.variables:
            if id(variable) not in substituted:
                value = outer.get_current_value(variable)
                if value is not None:
                    mapping.append((variable, value))
    scope = keras.StatelessScope(state_mapping=mapping, collect_losses=True)
    initial = {id(v): scope.get_current_value(v) for v, _ in mapping}
    with scope:
        outputs = layer(inputs, **kwargs)
    for variable in layer.variables:
        if id(variable) in substituted:
            continue
        value = scope.get_current_value(variable)
        if value is not None and value is not initial.get(id(variable)):
            variable.assign(value)
    for loss in scope.losses:
        if outer is not None:
            if outer.collect_losses:
                outer.add_loss(loss)
        else:
            layer.add_loss(loss)
    return outputs
