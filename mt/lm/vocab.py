"""The vocabulary of a character language model: text <-> ids.

Ids 0-3 are mt's special ids (mt/tokenizer.py: PAD, UNK, BOS, EOS), so that the searches of mt/search.py
run over a language model as they do over a decoder. A text never holds PAD, BOS or EOS, and the model
gives them no probability (see LanguageModel.logits); UNK stands for a character outside a `char`
vocabulary.

    char   the newline, then every character of the training text seen at least min_count times, in
           code point order; any other character reads as UNK
    byte   the 256 byte values of the text's UTF-8; decoding replaces an incomplete character
"""

from dataclasses import dataclass

import numpy as np

from mt.errors import UserError
from mt.tokenizer import BOS, EOS, PAD, UNK

SPECIAL = 4  # ids below this are mt's special ids
NEVER = (PAD, BOS, EOS)  # ids no text holds: the model's softmax leaves them out
FORMAT = 1


@dataclass(frozen=True)
class Vocabulary:
    kind: str  # char | byte
    symbols: tuple = ()  # char: the characters of ids SPECIAL, SPECIAL + 1, ...

    @classmethod
    def build(cls, kind, text, min_count=1):
        """The vocabulary `kind` of the training text `text`."""
        if kind == "byte":
            return cls("byte")
        points, counts = np.unique(code_points(text), return_counts=True)
        kept = [chr(p) for p, n in zip(points.tolist(), counts.tolist()) if n >= min_count and p != ord("\n")]
        return cls("char", ("\n", *kept))

    @property
    def size(self):
        return SPECIAL + (256 if self.kind == "byte" else len(self.symbols))

    @property
    def never(self):
        """Ids the model gives no probability: PAD, BOS, EOS, and UNK for bytes (every byte is known)."""
        return NEVER + ((UNK,) if self.kind == "byte" else ())

    def encode(self, text) -> np.ndarray:
        """text -> int32 ids [len]: one id per character (char) or per UTF-8 byte (byte)."""
        if self.kind == "byte":
            return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32) + SPECIAL
        points = code_points(text)
        known = np.array([ord(s) for s in self.symbols], np.int64)
        order = np.argsort(known)
        where = np.clip(np.searchsorted(known[order], points), 0, len(known) - 1)
        found = known[order][where] == points
        return np.where(found, order[where] + SPECIAL, UNK).astype(np.int32)

    def unknown(self, ids) -> int:
        """How many of `ids` are UNK."""
        return int(np.count_nonzero(np.asarray(ids) == UNK))

    def decode(self, ids) -> str:
        """ids -> text; special ids are left out (UNK shows as U+FFFD)."""
        ids = [int(i) for i in ids]
        if self.kind == "byte":
            return bytes(i - SPECIAL for i in ids if i >= SPECIAL).decode("utf-8", errors="replace")
        return "".join(self.symbols[i - SPECIAL] if i >= SPECIAL else "\ufffd" if i == UNK else "" for i in ids)

    def id_of(self, char):
        """The id of one character (byte vocabularies: of its first byte)."""
        return int(self.encode(char)[0])

    def record(self):
        return {"format": FORMAT, "kind": self.kind, "symbols": list(self.symbols)}

    @classmethod
    def from_record(cls, record, where):
        try:
            if record.get("format") != FORMAT or record["kind"] not in ("char", "byte"):
                raise ValueError("format or kind")
            symbols = tuple(record.get("symbols") or ())
            if any(not isinstance(s, str) or len(s) != 1 for s in symbols) or len(set(symbols)) != len(symbols):
                raise ValueError("symbols")
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise UserError(f"{where} is damaged ({e}): train the run again with `mt lm train --restart`") from None
        return cls(record["kind"], symbols)


def code_points(text) -> np.ndarray:
    """The code points of `text`, int64 [len]."""
    return np.frombuffer(text.encode("utf-32-le"), np.uint32).astype(np.int64)
