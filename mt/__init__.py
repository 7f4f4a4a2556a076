"""mt: recurrent neural machine translation on Keras 3 and TensorFlow."""

import os

__version__ = "0.1.0"

# mt's models are written for Keras 3 on the TensorFlow backend; quiet TensorFlow's C++ start-up logs.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
