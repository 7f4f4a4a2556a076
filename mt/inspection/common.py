"""What the inspect commands share: reading their source text, and showing pieces and text."""

import unicodedata

from mt.errors import UserError

WORD_MARK = "\u2581"  # SentencePiece's word-start mark


def source_lines(src, input, max_sentences):
    """The text to look at: --src (one sentence) or the lines of --input ('-': stdin).

    Returns (lines, empty, left_out): the lines up to the `max_sentences`-th non-empty one, empty lines
    kept in place so that every line keeps its number (sampling draws depend on it, as in translate);
    how many of those are empty; how many non-empty lines are left out beyond `max_sentences`.
    """
    from mt.translate import read_source

    if (src is None) == (input is None):
        raise UserError("give exactly one of --src (a sentence) and --input (a file, one sentence a line)")
    if max_sentences < 1:
        raise UserError(f"--max-sentences must be at least 1, got {max_sentences}")
    lines = [src.strip()] if src is not None else read_source(input)
    full = [number for number, line in enumerate(lines) if line]
    if not full:
        raise UserError("nothing to look at: the source text is empty")
    lines = lines[:full[:max_sentences][-1] + 1]
    return lines, sum(1 for line in lines if not line), max(0, len(full) - max_sentences)


def byte_value(piece):
    """The byte of a byte-fallback piece such as <0x22>, or None for any other piece."""
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        try:
            return int(piece[3:5], 16)
        except ValueError:
            return None
    return None


def piece_text(piece) -> str:
    """The characters of a piece: the word-start mark as a space; a byte piece of an ASCII character as
    that character, of any other byte as nothing (the byte is part of a longer character)."""
    value = byte_value(piece)
    if value is not None:
        return chr(value) if value < 0x80 else ""
    return piece.replace(WORD_MARK, " ")


def display_piece(piece, first=False):
    """A piece as readable text: like piece_text, but a non-ASCII byte piece stays as it is (<0xE2>), and
    the space of a word start is dropped at the start of a sentence."""
    value = byte_value(piece)
    text = piece if value is not None and value >= 0x80 else printable(piece_text(piece))
    return text.lstrip(" ") if first else text


def printable(text) -> str:
    """`text` with control and format characters shown as escapes (an untrained model can decode a
    stray byte piece into one), so that labels and headings stay readable and drawable."""
    out = []
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Cf"):
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)
