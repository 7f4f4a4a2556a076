"""What the inspect commands share: reading their source text, and showing pieces and text."""

import unicodedata

from mt.errors import UserError

WORD_MARK = "\u2581"  # SentencePiece's word-start mark


def source_lines(src, input, max_sentences):
    """The sentences to look at: --src (one) or the lines of --input ('-': stdin), without empty lines.

    Returns (sentences, skipped empty lines, lines left out beyond max_sentences).
    """
    from mt.translate import read_lines

    if (src is None) == (input is None):
        raise UserError("give exactly one of --src (a sentence) and --input (a file, one sentence a line)")
    if max_sentences < 1:
        raise UserError(f"--max-sentences must be at least 1, got {max_sentences}")
    lines = [src.strip()] if src is not None else read_lines(input)
    kept = [line for line in lines if line]
    if not kept:
        raise UserError("nothing to look at: the source text is empty")
    return kept[:max_sentences], len(lines) - len(kept), max(0, len(kept) - max_sentences)


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
