"""keras_sn: spectral normalization for Keras 3 that never overwrites weights."""

from keras_sn import weights
from keras_sn.spectral_normalization import SpectralNormalization

__version__ = "0.1.0"

__all__ = [
    "SpectralNormalization",
    "weights",
    "__version__",
]
