"""What the benchmarks share: the SN-GAN Table-3 networks, the machine they
ran on, and how a set of per-round ratios is summarized.

Only public names of `keras_sn` are used here (and in every benchmark).
"""

import math
import os
import platform

import keras
import numpy as np

import keras_sn

# The SN-GAN "standard CNN" (Miyato et al. 2018, Table 3) at 32x32x3.
DISCRIMINATOR_CONVS = [
    (64, 3, 1), (64, 4, 2), (128, 3, 1), (128, 4, 2),
    (256, 3, 1), (256, 4, 2), (512, 3, 1),
]
LATENT = 128
# Adam as in the paper's Table 1 setting for the standard CNN.
ADAM = dict(learning_rate=2e-4, beta_1=0.0, beta_2=0.9)


def wrapper(variant):
    """`plain`: no wrapper; `keras_sn`: this package's; `keras`: the
    built-in `keras.layers.SpectralNormalization`."""
    if variant == "plain":
        return lambda layer: layer
    if variant == "keras_sn":
        return keras_sn.SpectralNormalization
    if variant == "keras":
        return keras.layers.SpectralNormalization
    raise ValueError(f"unknown variant {variant!r}")


def discriminator(variant="keras_sn", image_size=32, channels=3):
    """Table 3's discriminator, every conv and the dense wrapped by `variant`."""
    sn = wrapper(variant)
    layers = [keras.Input((image_size, image_size, channels))]
    for filters, kernel, stride in DISCRIMINATOR_CONVS:
        layers += [
            sn(keras.layers.Conv2D(filters, kernel, stride, padding="same")),
            keras.layers.LeakyReLU(0.1),
        ]
    layers += [keras.layers.Flatten(), sn(keras.layers.Dense(1))]
    return keras.Sequential(layers, name=f"discriminator_{variant}")


def generator(variant="plain", image_size=32, channels=3, latent=LATENT):
    """Table 3's generator; every convolution wrapped by `variant` (as SAGAN
    does; the paper's generator is unwrapped, `variant="plain"`)."""
    sn = wrapper(variant)
    mg = image_size // 8
    layers = [
        keras.Input((latent,)),
        keras.layers.Dense(mg * mg * 512),
        keras.layers.Reshape((mg, mg, 512)),
    ]
    for filters in (256, 128, 64):
        layers += [
            sn(keras.layers.Conv2DTranspose(filters, 4, 2, padding="same")),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
        ]
    layers += [
        sn(keras.layers.Conv2D(channels, 3, padding="same")),
        keras.layers.Activation("tanh"),
    ]
    return keras.Sequential(layers, name=f"generator_{variant}")


def build(model_name, variant):
    if model_name == "discriminator":
        return discriminator(variant)
    if model_name == "generator":
        return generator(variant)
    raise ValueError(f"unknown model {model_name!r}")


def inputs(model_name, batch, seed=0):
    """One fixed float32 numpy input batch for `model_name`."""
    rng = np.random.default_rng(seed)
    if model_name == "discriminator":
        return rng.uniform(-1, 1, (batch, 32, 32, 3)).astype("float32")
    return rng.standard_normal((batch, LATENT)).astype("float32")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _gpu_name():
    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                details = tf.config.experimental.get_device_details(gpus[0])
                return details.get("device_name", gpus[0].name)
        elif backend == "jax":
            import jax

            devices = [d for d in jax.devices() if d.platform == "gpu"]
            if devices:
                return devices[0].device_kind
        elif backend == "torch":
            import torch

            if torch.cuda.is_available():
                return torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - a description never fails a run
        pass
    return None


def machine():
    """The machine and software a benchmark ran on, as one flat dict."""
    backend = keras.backend.backend()
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(
        backend)
    version = None
    if module:
        try:
            version = __import__(module).__version__
        except ImportError:
            pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "gpu": _gpu_name(),
        "python": platform.python_version(),
        "keras": keras.__version__,
        "backend": backend,
        "backend_version": version,
        "keras_sn": keras_sn.__version__,
    }
    return info


def describe(info):
    return ", ".join(f"{key}={value}" for key, value in info.items())


def summarize(values):
    """Median, first and third quartiles and IQR of `values` (numpy's
    linear-interpolation percentiles)."""
    q1, median, q3 = np.percentile(np.asarray(values, dtype=float),
                                   [25, 50, 75])
    return {"median": float(median), "q1": float(q1), "q3": float(q3),
            "iqr": float(q3 - q1), "n": len(values)}


def median_interval(values, level=0.95):
    """A distribution-free confidence interval of the median: the order
    statistics `(x_(k), x_(n+1-k))` with the largest `k` whose coverage,
    ``1 - 2 P(Binomial(n, 1/2) < k)``, is at least `level`. `None` for fewer
    than 6 values (no such `k` at 95%)."""
    ordered = sorted(float(v) for v in values)
    n = len(ordered)
    below, best = 0.0, None
    for k in range(1, n // 2 + 1):
        # P(Binomial(n, 1/2) < k): fewer than k values below the median.
        below += math.comb(n, k - 1) / 2 ** n
        if 1 - 2 * below < level:
            break
        best = k
    if best is None:
        return None
    return ordered[best - 1], ordered[n - best]


def ratio_summary(samples, baseline):
    """Summary of the per-round ratios `samples[i] / baseline[i]`, with the
    95% interval of their median (`ci95`, `None` below 6 rounds)."""
    ratios = [a / b for a, b in zip(samples, baseline)]
    return {**summarize(ratios), "ci95": median_interval(ratios)}


def interval(summary, digits=3):
    """`1.002-1.080`: a summary's 95% interval of the median, or `n/a`."""
    if summary.get("ci95") is None:
        return "n/a"
    low, high = summary["ci95"]
    return f"{low:.{digits}f}-{high:.{digits}f}"


def cell(summary, digits=3):
    """`x1.023 (IQR 0.015)`: how a ratio is printed in every table."""
    return (f"x{summary['median']:.{digits}f} "
            f"(IQR {summary['iqr']:.{digits}f})")
