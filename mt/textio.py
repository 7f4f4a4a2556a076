"""Reading text files: UTF-8 lines without line ends, errors naming file and line.

Every command reads its text through `iter_lines` / `read_lines`, so all of them agree: lines end at
'\\n' only (other Unicode separators stay inside a line), a '\\r' before it is dropped, a byte-order mark
at the start of the file is skipped, and '-' means standard input.
"""

import hashlib
import sys

from mt.errors import UserError

UTF8_BOM = b"\xef\xbb\xbf"


def _open_binary(path):
    if path == "-":
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

    def __init__(self, path, on_invalid="error", replaced=None, fix="convert the file to UTF-8"):
        self.path, self.on_invalid, self.replaced, self.fix = path, on_invalid, replaced, fix
        self.lines = self.bytes = 0
        self._digest = hashlib.sha256()

    @property
    def sha256(self):
        return self._digest.hexdigest()

    def __iter__(self):
        f = _open_binary(self.path)
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
