"""Atomic, durable writes: write a temporary file beside the target, flush it to disk, rename it over
the target, and flush the folder, so that after a crash or power loss the target is the old file or the
whole new one, never a part. A folder of files (`mt export`) is written the same way: a temporary
folder beside the target, renamed once whole."""

import contextlib
import json
import os
import shutil
import tempfile


def fsync_folder(folder):
    """Make a rename in `folder` durable (where the platform can open folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path):
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path in the target's folder; on success flush it, rename it to `path` and flush
    the folder; on failure delete it."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private; give it ordinary permissions
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_folder(folder)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path, mode="w", encoding="utf-8"):
    """Open a temporary file for writing; it replaces `path` only if the block finishes."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as f:
            yield f


def write_json(path, obj):
    with atomic_open(path) as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def write_bytes(path, data):
    with atomic_open(path, "wb") as f:
        f.write(data)


def check_writable_folder(folder, what):
    """Make sure files can be written in `folder` (or, while it does not exist, created in its nearest
    existing parent), before any long work whose result would otherwise be lost; a UserError naming the
    folder otherwise. Nothing is left behind."""
    from mt.errors import UserError

    folder = os.path.abspath(os.fspath(folder))
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    try:
        if not os.path.isdir(existing):
            raise NotADirectoryError(20, "Not a directory", existing)
        fd, probe = tempfile.mkstemp(prefix=".mt-write-check.", dir=existing)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise UserError(f"cannot write {what} in {folder}: {e.strerror or e}; choose a writable place") from None


def is_empty_folder(path):
    return os.path.isdir(path) and not os.listdir(path)


@contextlib.contextmanager
def atomic_folder(path, replace=False):
    """Yield a new temporary folder beside `path` to fill; when the block finishes, flush its files and
    rename it to `path`, so that `path` is never a partly written folder; on failure remove it.

    `path` may be missing or an empty folder; an existing non-empty folder is replaced only with
    `replace` (it is renamed aside, then removed once the new folder stands in its place)."""
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=parent)
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes the folder private; give it ordinary permissions
    old = None
    try:
        yield tmp
        for folder, _, files in os.walk(tmp):
            for name in files:
                fsync_file(os.path.join(folder, name))
            fsync_folder(folder)
        if os.path.isdir(path) and not is_empty_folder(path):
            if not replace:
                raise FileExistsError(17, "Folder exists and is not empty", path)
            old = tempfile.mkdtemp(prefix="." + os.path.basename(path) + ".", suffix=".old", dir=parent)
            os.replace(path, old)  # onto the empty folder just made: a rename in one folder
        os.replace(tmp, path)  # onto a missing or empty folder
        fsync_folder(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not os.path.exists(path):
            os.replace(old, path)  # the new folder could not take its place: the old one goes back
            old = None
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
