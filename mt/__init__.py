"""mt: recurrent neural machine translation on Keras 3 and TensorFlow."""

__version__ = "0.1.0"
