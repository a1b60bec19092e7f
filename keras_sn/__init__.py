"""keras_sn: spectral and weight normalization for Keras 3 that never
overwrites weights.

The public API is `__all__`: the names below and the submodules
`keras_sn.callbacks` and `keras_sn.weights`. Everything else is private
(`keras_sn._src`, `keras_sn._compat`) and may change in any release.
"""

from keras_sn import _compat

_compat.check_keras_version()

from keras_sn import callbacks  # noqa: E402
from keras_sn import weights  # noqa: E402
from keras_sn._src.migration import from_builtin  # noqa: E402
from keras_sn._src.model_tools import apply  # noqa: E402
from keras_sn._src.model_tools import strip  # noqa: E402
from keras_sn._src.model_tools import wrapped_layers  # noqa: E402
from keras_sn._src.report import report  # noqa: E402
from keras_sn._src.spectral_norm import spectral_norm  # noqa: E402
from keras_sn._src.spectral_normalization import (  # noqa: E402
    SpectralNormalization,
)
from keras_sn._src.weight_normalization import (  # noqa: E402
    WeightNormalization,
)

__version__ = "0.2.0"

__all__ = [
    "SpectralNormalization",
    "WeightNormalization",
    "apply",
    "callbacks",
    "from_builtin",
    "report",
    "spectral_norm",
    "strip",
    "weights",
    "wrapped_layers",
    "__version__",
]
