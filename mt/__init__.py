"""mt: recurrent neural machine translation on Keras 3 and TensorFlow."""

import os

__version__ = "0.1.0"

# mt's models are written for Keras 3 on the TensorFlow backend; quiet TensorFlow's C++ start-up logs.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# TensorFlow turns its oneDNN CPU kernels on by default only for CPUs with AVX-512; on an AVX2 CPU they
# make mt's matrix products 1.5-1.8x faster and a training step 1.5x faster (BENCHMARKS.md). Set
# TF_ENABLE_ONEDNN_OPTS=0 to use TensorFlow's Eigen kernels instead.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
