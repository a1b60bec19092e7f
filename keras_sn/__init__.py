"""keras_sn: spectral normalization for Keras 3 that never overwrites weights."""

from keras_sn import callbacks
from keras_sn import weights
from keras_sn.exact_norm import spectral_norm
from keras_sn.model_tools import apply
from keras_sn.model_tools import strip
from keras_sn.model_tools import wrapped_layers
from keras_sn.report import report
from keras_sn.spectral_normalization import SpectralNormalization

__version__ = "0.1.0"

__all__ = [
    "SpectralNormalization",
    "apply",
    "callbacks",
    "report",
    "spectral_norm",
    "strip",
    "weights",
    "wrapped_layers",
    "__version__",
]
