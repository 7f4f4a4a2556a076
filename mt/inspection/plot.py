"""matplotlib, optional: imported only when an image is written, with a clear message when it is missing."""

import os

from mt.atomic import atomic_path
from mt.errors import UserError

IMAGE_FORMATS = ("png", "svg", "pdf")
DPI = 100


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend; a UserError saying how to install it if missing."""
    try:
        import matplotlib
    except ImportError:
        raise UserError("drawing images needs matplotlib, an optional extra: pip install 'mt[viz]' "
                        "(or pip install matplotlib); an .html page needs nothing more") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def output_kind(path, allowed) -> str:
    """'png', 'svg', 'pdf' or 'html' from the extension of `path`; a UserError if it is not in `allowed`."""
    ext = os.path.splitext(str(path))[1].lower().lstrip(".")
    if ext not in allowed:
        raise UserError(f"cannot write {path}: the extension must be one of "
                        f"{', '.join('.' + a for a in allowed)}")
    return ext


def save(fig, path):
    """Save a figure (its size exactly as set: no tight cropping) atomically, then close it."""
    plt = pyplot()
    kind = output_kind(path, IMAGE_FORMATS)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=kind, dpi=DPI)
    finally:
        plt.close(fig)
