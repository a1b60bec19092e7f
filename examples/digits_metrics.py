"""Scores for generators of scikit-learn's bundled digits (`--eval`).

Used by `examples/dcgan.py`, `examples/conditional_sngan.py` and
`benchmarks/gan_quality.py`. A score a reader can trust needs a reference it
cannot game:

- The digits are split once, stratified 50/50 (`random_state=0`), into a
  reference half and a held-out half. A small CNN classifier is trained on the
  reference half only (about 99 % accuracy on the held-out half) and cached
  under `$KERAS_HOME/keras_sn/` (or `cache_dir`), keyed by the image size, the
  split and the classifier's version.
- Frechet distance (FD): the squared 2-Wasserstein distance between Gaussians
  fitted to the classifier's 64 penultimate features of the reference half
  and of the samples (the FID formula, with a digits classifier in place of
  Inception).
- KL(labels || uniform): the predicted labels' histogram against uniform; 0
  when all ten digits are produced equally often, log(10) = 2.30 for one class.
- Every row uses as many samples as the held-out half (899), so the
  estimators' bias is the same in each row. The held-out half's own score is
  the floor (fresh real digits). Baselines in the same table: a Gaussian
  mixture (20 components, full covariance) fitted to all the digits in a
  20-dimensional PCA space, a collapsed generator (one real digit, repeated)
  and uniform noise.
- For a class-conditional generator: the classifier's accuracy on samples
  against the labels they were requested with, and the mean over the ten
  classes of the per-class FD (samples of class c against reference digits of
  class c), beside the same two figures for the held-out real digits.
"""

import os
import pathlib

import keras
import numpy as np
from keras import layers

CLASSIFIER_VERSION = 1
SPLIT_SEED = 0


def load_digits_8x8():
    """The bundled digits: `(images, labels)`, images (1797, 8, 8) in [0, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images.astype("float32") / 16.0, digits.target.astype("int64")


def digits_to_images(images_8x8, image_size):
    """(N, 8, 8) in [0, 1] -> (N, image_size, image_size, 1) in [-1, 1]."""
    images = keras.ops.image.resize(
        np.asarray(images_8x8, "float32")[..., None],
        (image_size, image_size), interpolation="bilinear",
    )
    return np.clip(keras.ops.convert_to_numpy(images) * 2.0 - 1.0, -1.0, 1.0)


def digits_split():
    """`(reference images, reference labels, held-out images, labels)`, 8x8."""
    from sklearn.model_selection import train_test_split

    x8, y = load_digits_8x8()
    x_ref, x_held, y_ref, y_held = train_test_split(
        x8, y, test_size=0.5, stratify=y, random_state=SPLIT_SEED
    )
    return x_ref, y_ref, x_held, y_held


def default_cache_dir():
    home = os.environ.get("KERAS_HOME", os.path.join("~", ".keras"))
    return pathlib.Path(home).expanduser() / "keras_sn"


def build_classifier(image_size):
    inputs = keras.Input((image_size, image_size, 1))
    x = layers.RandomTranslation(0.1, 0.1, fill_mode="constant", fill_value=-1.0)(
        inputs
    )
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.3)(x)
    features = layers.Dense(64, activation="relu", name="features")(x)
    outputs = layers.Dense(10, activation="softmax", name="labels")(features)
    return keras.Model(inputs, outputs, name="digits_classifier")


def digits_classifier(image_size, cache_dir=None, verbose=True):
    """The cached digits classifier for `image_size`; trained if not cached."""
    cache_dir = pathlib.Path(cache_dir) if cache_dir else default_cache_dir()
    path = cache_dir / (
        f"digits_classifier_{image_size}px_split{SPLIT_SEED}"
        f"_v{CLASSIFIER_VERSION}.keras"
    )
    if path.exists():
        if verbose:
            print(f"Digits classifier: loaded from the cache, {path}")
        return keras.saving.load_model(path)
    x_ref, y_ref, x_held, y_held = digits_split()
    keras.utils.set_random_seed(SPLIT_SEED)
    classifier = build_classifier(image_size)
    classifier.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    classifier.fit(
        digits_to_images(x_ref, image_size), y_ref,
        batch_size=64, epochs=40, verbose=0,
    )
    _, accuracy = classifier.evaluate(
        digits_to_images(x_held, image_size), y_held, verbose=0
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    classifier.save(path)
    if verbose:
        print(
            f"Digits classifier: trained on {len(x_ref)} digits, held-out "
            f"accuracy {accuracy:.3f}; cached in {path}"
        )
    return classifier


def frechet_distance(mu1, cov1, mu2, cov2):
    """||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2)) for Gaussians."""
    mu1, mu2 = np.asarray(mu1, "float64"), np.asarray(mu2, "float64")
    cov1, cov2 = np.asarray(cov1, "float64"), np.asarray(cov2, "float64")
    # tr((C1 C2)^(1/2)) = sum of sqrt(eig(C1^(1/2) C2 C1^(1/2))), all real >= 0.
    values, vectors = np.linalg.eigh(cov1)
    root1 = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = np.linalg.eigvalsh(root1 @ cov2 @ root1)
    trace_root = np.sqrt(np.clip(middle, 0, None)).sum()
    return float(
        np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * trace_root
    )


def kl_from_uniform(labels, classes=10):
    """KL(histogram of `labels` || uniform over `classes`), in nats."""
    p = np.bincount(np.asarray(labels), minlength=classes) / len(labels)
    p = p[p > 0]
    return float(np.sum(p * np.log(p * classes)))


def _gaussian(features):
    features = np.asarray(features, "float64")
    return features.mean(axis=0), np.cov(features, rowvar=False)


class DigitsScorer:
    """FD and label KL (and conditional scores) against the reference half."""

    def __init__(self, image_size, cache_dir=None, verbose=True):
        self.image_size = image_size
        classifier = digits_classifier(image_size, cache_dir, verbose)
        self.features = keras.Model(
            classifier.input,
            [classifier.get_layer("features").output, classifier.outputs[0]],
        )
        x_ref, self.reference_labels, x_held, self.held_out_labels = (
            digits_split()
        )
        self.reference = digits_to_images(x_ref, image_size)
        self.held_out = digits_to_images(x_held, image_size)
        features, _ = self._predict(self.reference)
        self.mu, self.cov = _gaussian(features)
        self.class_stats = [
            _gaussian(features[self.reference_labels == c]) for c in range(10)
        ]
        self.samples = len(self.held_out)

    def _predict(self, images):
        # Eager calls: `predict` would retrace for every new sample count.
        features, probabilities = self.features(
            np.asarray(images, "float32"), training=False)
        return keras.ops.convert_to_numpy(features), keras.ops.convert_to_numpy(
            probabilities)

    def score(self, images):
        """`{"fd": ..., "kl": ...}` for (N, s, s, 1) images in [-1, 1]."""
        features, probabilities = self._predict(images)
        mu, cov = _gaussian(features)
        return {
            "fd": frechet_distance(mu, cov, self.mu, self.cov),
            "kl": kl_from_uniform(np.argmax(probabilities, axis=-1)),
        }

    def score_conditional(self, images, labels):
        """FD, KL, accuracy vs `labels` and the mean per-class FD."""
        features, probabilities = self._predict(images)
        labels = np.asarray(labels)
        predicted = np.argmax(probabilities, axis=-1)
        mu, cov = _gaussian(features)
        class_fds = [
            frechet_distance(*_gaussian(features[labels == c]), *self.class_stats[c])
            for c in range(10)
        ]
        return {
            "fd": frechet_distance(mu, cov, self.mu, self.cov),
            "kl": kl_from_uniform(predicted),
            "accuracy": float(np.mean(predicted == labels)),
            "class_fd": float(np.mean(class_fds)),
        }

    def held_out_conditional(self):
        """The conditional scores of the held-out real digits (the floor)."""
        return self.score_conditional(self.held_out, self.held_out_labels)

    def baselines(self, seed=0):
        """Scores of the floor and of reference generators, same sample size."""
        from sklearn.decomposition import PCA
        from sklearn.mixture import GaussianMixture

        rng = np.random.default_rng(seed)
        n, s = self.samples, self.image_size
        x8, _ = load_digits_8x8()
        flat = x8.reshape(len(x8), -1)
        pca = PCA(n_components=20, random_state=seed).fit(flat)
        mixture = GaussianMixture(
            n_components=20, covariance_type="full", random_state=seed
        ).fit(pca.transform(flat))
        drawn, _ = mixture.sample(n)
        gmm = np.clip(pca.inverse_transform(drawn), 0, 1).reshape(n, 8, 8)
        one_digit = self.reference[rng.integers(len(self.reference))]
        return {
            "held-out real digits (floor)": self.score(self.held_out),
            "Gaussian mixture, 20 comp. on PCA-20 (baseline)": self.score(
                digits_to_images(gmm.astype("float32"), s)
            ),
            "collapsed: one real digit repeated": self.score(
                np.repeat(one_digit[None], n, axis=0)
            ),
            "uniform noise": self.score(
                rng.uniform(-1, 1, (n, s, s, 1)).astype("float32")
            ),
        }


def evaluate_generator(generator, image_size, *, cache_dir=None, seed=0,
                       verbose=True):
    """Scores `generator` (z -> images) and the reference rows."""
    scorer = DigitsScorer(image_size, cache_dir, verbose)
    z = np.random.default_rng(seed + 1).standard_normal(
        (scorer.samples, generator.input_shape[-1])
    ).astype("float32")
    rows = {"this generator": scorer.score(generator.predict(z, verbose=0))}
    rows.update(scorer.baselines(seed))
    return rows


def evaluate_conditional(generator, image_size, *, cache_dir=None, seed=0,
                         verbose=True):
    """Scores `generator` ([z, labels] -> images) beside the held-out digits.

    It draws as many samples as the held-out half, with the held-out half's
    labels (about 90 per class), so both rows have the same per-class counts.
    """
    scorer = DigitsScorer(image_size, cache_dir, verbose)
    labels = scorer.held_out_labels
    z = np.random.default_rng(seed + 1).standard_normal(
        (len(labels), generator.input_shape[0][-1])
    ).astype("float32")
    images = generator.predict([z, labels], verbose=0)
    return {
        "this generator": scorer.score_conditional(images, labels),
        "held-out real digits (floor)": scorer.held_out_conditional(),
    }


def format_scores(rows):
    keys = [k for k in ("fd", "kl", "accuracy", "class_fd")
            if k in next(iter(rows.values()))]
    titles = {"fd": "FD", "kl": "KL", "accuracy": "accuracy",
              "class_fd": "class FD"}
    lines = [f"{'':50s}" + "".join(f" {titles[k]:>9s}" for k in keys)]
    for name, score in rows.items():
        lines.append(f"{name:50s}" + "".join(f" {score[k]:9.3f}" for k in keys))
    return "\n".join(lines)
