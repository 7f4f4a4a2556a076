"""Reading text files: UTF-8 lines without line ends, errors naming file and line.

Every command reads its text through `iter_lines` / `read_lines`, so all of them agree: lines end at
'\\n' only (other Unicode separators stay inside a line), a '\\r' before it is dropped, a byte-order mark
at the start of the file is skipped, and '-' means standard input.
"""

import hashlib
import os
import queue
import stat
import sys
import threading
import time

from mt.errors import UserError

UTF8_BOM = b"\xef\xbb\xbf"


def _open_binary(path, own_stdin=False):
    """The file as a binary stream; '-' is stdin: sys.stdin.buffer, or with `own_stdin` a reader of its own
    over the same descriptor, for a thread that may still wait in a read when the process exits (Python
    aborts at exit when a thread holds the lock of sys.stdin.buffer)."""
    if path == "-":
        if own_stdin:
            try:
                return open(sys.stdin.fileno(), "rb", closefd=False)
            except (OSError, ValueError):  # a stdin without a descriptor (a test's stand-in) has no such lock
                pass
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except IsADirectoryError:
        raise UserError(f"{path} is a folder: pass a text file") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None


def display_name(path):
    return "stdin" if path == "-" else str(path)


class LineReader:
    """One pass over a text file ('-': stdin): its lines, and once they are read, the file's line count,
    SHA-256 and size, so that a pipe (`<(zcat corpus.gz)`) or a large file is read only once.

    An invalid UTF-8 byte is a UserError naming file, line and byte, unless on_invalid == "replace": then
    it becomes U+FFFD and `replaced[path]` (a Counter, if given) counts the lines concerned. `fix` ends
    the error message: how to mend the input."""

    def __init__(self, path, on_invalid="error", replaced=None, fix="convert the file to UTF-8", own_stdin=False):
        self.path, self.on_invalid, self.replaced, self.fix = path, on_invalid, replaced, fix
        self.own_stdin = own_stdin  # see _open_binary
        self.lines = self.bytes = 0
        self._digest = hashlib.sha256()

    @property
    def sha256(self):
        return self._digest.hexdigest()

    def __iter__(self):
        f = _open_binary(self.path, self.own_stdin)
        try:
            for number, raw in enumerate(f, 1):
                self.lines, self.bytes = number, self.bytes + len(raw)
                self._digest.update(raw)
                yield self._decode(raw, number)
        except OSError as e:
            raise UserError(f"cannot read {display_name(self.path)}: {e.strerror or e}") from None
        finally:
            if f is not sys.stdin.buffer:
                f.close()

    def _decode(self, raw, number):
        if number == 1 and raw.startswith(UTF8_BOM):
            raw = raw[len(UTF8_BOM):]
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            if self.on_invalid != "replace":
                raise UserError(f"{display_name(self.path)}, line {number}: invalid UTF-8 byte "
                                f"0x{raw[e.start]:02x} at byte {e.start + 1} of the line; {self.fix}") from None
            if self.replaced is not None:
                self.replaced[self.path] += 1
            return raw.decode("utf-8", errors="replace")


def iter_lines(path, on_invalid="error", replaced=None, fix="convert the file to UTF-8"):
    """Yield the lines of `path` ('-': stdin) as str, without line ends (see LineReader)."""
    return iter(LineReader(path, on_invalid, replaced, fix))


def read_lines(path, on_invalid="error"):
    """All lines of `path` as a list (see iter_lines)."""
    return list(iter_lines(path, on_invalid))


def count_lines(path):
    """Number of lines in a file (a last line without a line end counts too)."""
    count, last = 0, b"\n"
    with _open_binary(path) as f:
        while chunk := f.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def file_sha256(path):
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with _open_binary(path) as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def is_regular_file(path):
    """`path` ('-': stdin) is a regular file: its lines are all there and reading never waits for more (a
    pipe, a terminal or a FIFO may)."""
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode if path == "-" else os.stat(path).st_mode
    except (OSError, ValueError):  # ValueError: stdin closed or replaced by an object without a descriptor
        return False
    return stat.S_ISREG(mode)


_END, _PAUSE = object(), object()  # iter_chunks: the input has ended; no line came within the pause


def iter_chunks(path, max_lines, pause=0.02, hold=0.5, between=None):
    """The lines of `path` ('-': stdin) as lists of at most `max_lines`, for a caller that works on each
    list before it asks for the next one (see iter_lines for what a line is).

    A regular file is cut into lists of `max_lines` lines (the last one shorter): the file alone decides
    them. Any other input (a pipe, a terminal) may deliver its lines slowly, and a line must not wait for
    lines that have not been written yet: a thread reads it ahead, by at most `max_lines` lines, and a
    list ends once the input pauses for `pause` seconds, or `hold` seconds after the list's first line
    arrived, so that a line typed or written alone comes back as a list of one. A reading error (invalid
    UTF-8, say) is raised when its line is reached. `between` is called before the next list is read, once
    the caller is done with the last one (to flush what answers the lines so far)."""
    if max_lines < 1:
        raise ValueError(f"max_lines must be at least 1, got {max_lines}")
    if is_regular_file(path):
        chunk = []
        for line in iter_lines(path):
            if len(chunk) == max_lines:
                yield chunk
                chunk = []
                if between:
                    between()
            chunk.append(line)
        if chunk:
            yield chunk
        return
    yield from _arriving_chunks(path, max_lines, pause, hold, between)


def _arriving_chunks(path, max_lines, pause, hold, between):
    lines, stop = queue.Queue(max_lines), threading.Event()

    def read():
        try:
            for line in LineReader(path, own_stdin=True):
                if stop.is_set():
                    return
                lines.put(line)
            lines.put(_END)
        except BaseException as error:  # handed to the caller's thread, which raises it
            lines.put(error)

    # a daemon thread: a command that stops early (an error, Ctrl-C) does not wait for input that may never come
    threading.Thread(target=read, daemon=True, name="mt-input").start()
    try:
        item = None
        while item is not _END:
            item = interruptible_get(lines)
            chunk, deadline = [], time.monotonic() + hold
            while item is not _END and item is not _PAUSE:
                if isinstance(item, BaseException):
                    raise item
                chunk.append(item)
                if len(chunk) == max_lines:
                    break
                item = _next_line(lines, pause, deadline)
            if chunk:
                yield chunk
            if item is not _END and between:
                between()
    finally:
        stop.set()
        while True:  # unblock a reader waiting to put a line, so that it sees `stop`
            try:
                lines.get_nowait()
            except queue.Empty:
                break


def interruptible_get(lines, poll=0.2):
    """The next item of `lines` (a queue), however long it takes. The wait is cut into short ones: a
    signal the kernel hands to another thread (Ctrl-C may land on any) interrupts no wait of this one, and
    Python runs its handler here only once a wait returns."""
    while True:
        try:
            return lines.get(timeout=poll)
        except queue.Empty:
            pass


def _next_line(lines, pause, deadline):
    """The next line of the queue if one has arrived, or arrives within `pause` seconds and before
    `deadline`; else _PAUSE."""
    try:
        return lines.get_nowait()
    except queue.Empty:
        pass
    wait = min(pause, deadline - time.monotonic())
    if wait <= 0:
        return _PAUSE
    try:
        return lines.get(timeout=wait)
    except queue.Empty:
        return _PAUSE
