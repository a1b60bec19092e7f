"""Private implementation of keras_sn; the public API is `keras_sn.__all__`."""
