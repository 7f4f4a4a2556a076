"""Process-level facts and switches: TensorFlow's quiet import (and tensorflow-text's, for exported
models), the usable cores, native bfloat16, and whether the process's TensorFlow settings belong to the
running stage alone.

Nothing here imports TensorFlow at module level, so every command (and `mt --help`) may import it.
"""

import contextlib
import os
import sys

_SHARED = []  # one entry per `shared_process` block open in this process


def import_tensorflow_quietly():
    """Import TensorFlow and Keras with their native start-up messages silenced.

    TensorFlow's C++ side prints to file descriptor 2 before its own logging is set up, so
    TF_CPP_MIN_LOG_LEVEL cannot hide those lines; an import error still surfaces once stderr is back.
    """
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    # Keras imports matplotlib.pyplot at start-up for galleries mt never draws: hidden during the import
    # (a cost of every command), importable again after it for mt's own plots
    hide_matplotlib = "matplotlib" not in sys.modules
    if hide_matplotlib:
        sys.modules["matplotlib"] = None
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            try:
                import tensorflow  # noqa: F401
                import keras  # noqa: F401
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)
        if hide_matplotlib and sys.modules.get("matplotlib", False) is None:
            del sys.modules["matplotlib"]


EXPORT_EXTRA = "pip install 'mt[export]' (tensorflow-text 2.21.*, the release matching TensorFlow 2.21)"


def import_tensorflow_text(needed_for="an exported model"):
    """Import tensorflow_text, which registers the SentencePiece ops of exported models; a UserError
    telling how to install it when it is missing or does not fit the installed TensorFlow."""
    import_tensorflow_quietly()
    try:
        import tensorflow_text
    except ImportError:
        from mt.errors import UserError

        raise UserError(f"{needed_for} needs tensorflow-text, which is not installed: {EXPORT_EXTRA}") from None
    except Exception as e:  # its op library built for another TensorFlow: undefined symbols
        from mt.errors import UserError

        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"{needed_for} needs tensorflow-text matching TensorFlow, and it failed to load "
                        f"({first}): {EXPORT_EXTRA}") from None
    return tensorflow_text


def usable_cores():
    """The CPU cores this process may run on (its affinity mask, as under taskset or a container's CPU
    set), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def cpu_flags(cpuinfo="/proc/cpuinfo"):
    """The CPU's feature flags (empty where /proc/cpuinfo cannot tell)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            return set(next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), []))
    except OSError:
        return set()


def native_bfloat16(cpuinfo="/proc/cpuinfo"):
    """True when the CPU multiplies bfloat16 in hardware (AVX-512 BF16 or AMX); elsewhere TensorFlow
    emulates bfloat16 products, slower than float32 ones."""
    flags = cpu_flags(cpuinfo)
    return "avx512_bf16" in flags or "amx_bf16" in flags


def avx512(cpuinfo="/proc/cpuinfo"):
    """True when the CPU has AVX-512 (its foundation instructions)."""
    return "avx512f" in cpu_flags(cpuinfo)


@contextlib.contextmanager
def shared_process():
    """Inside this block, stages share the process with later ones (`mt pipeline`): a stage must leave
    process-wide settings (TensorFlow's threads) as they are, since they cannot change back."""
    _SHARED.append(True)
    try:
        yield
    finally:
        _SHARED.pop()


def process_is_shared():
    """True inside `shared_process`."""
    return bool(_SHARED)
