"""mt: recurrent neural machine translation on Keras 3 and TensorFlow."""

import os

__version__ = "0.1.0"

# mt's models are written for Keras 3 on the TensorFlow backend; quiet TensorFlow's C++ start-up logs.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# oneDNN's CPU kernels on everywhere: TensorFlow enables them only with AVX-512, and on AVX2 CPUs they are
# faster than its Eigen kernels too (docs/design.md); TF_ENABLE_ONEDNN_OPTS=0 chooses Eigen.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def load(run_dir, weights="best", precision="auto"):
    """Open a run folder written by `mt train` for translation: `mt.load(RUN).translate("una frase")`; or
    a folder written by `mt export`, which translates with the search settings of the export.

    Imports TensorFlow only when called, so that `import mt` stays fast (see mt/api.py)."""
    from mt.api import load

    return load(run_dir, weights, precision)
