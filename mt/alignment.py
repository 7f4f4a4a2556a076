"""Hard source-target alignments from the decoder's attention, in Pharaoh format.

For every target piece a hypothesis wrote (its end of sentence left out), the source piece that the
attention of the step writing it weighted most is its aligned source piece (the first of equal weights).
Those links are written as fast_align writes its alignments: space-separated `i-j` pairs, i the source
position and j the target position, both from 0, in target order (then source order).

Two units (`mt translate --alignment-unit`):
- "word": positions of the whitespace-separated words (`str.split`) of the input line as given and of the
  translation as written, which is what fast_align reads and what tools that read its output expect. A
  word is linked to a source word when any of its pieces attends most to a piece of that word, so a word
  can have several links. Pieces are placed in the text by the byte spans SentencePiece reports, which
  follow its normalization back to the original text; a piece that covers only whitespace (a word-start
  mark of its own) belongs to the word after it.
- "piece": positions of the SentencePiece pieces the model read and wrote (the source after the cut to
  the input limit), one link per target piece.
"""

import numpy as np

UNITS = ("word", "piece")


def source_of_target(attention, target_length):
    """For each of the first `target_length` rows of attention [target, source], the source position it
    weights most: an int array [target_length] (empty without any source position)."""
    weights = np.asarray(attention)[:target_length]
    if not weights.shape[-1]:
        return np.zeros([0], np.int64)
    return np.argmax(weights, axis=-1)


def words_of_pieces(text, spans):
    """For every piece, given by its (begin, end) byte span in the UTF-8 of `text`, the index of the word
    of `text.split()` it belongs to: the word of the first non-whitespace character at or after its
    begin; -1 for a piece with no word after it."""
    owner = []  # the word index of every byte, -1 on whitespace
    word, inside = -1, False
    for ch in text:
        if ch.isspace():
            inside = False
            owner.extend([-1] * len(ch.encode("utf-8")))
            continue
        if not inside:
            word, inside = word + 1, True
        owner.extend([word] * len(ch.encode("utf-8")))
    following = [-1] * (len(owner) + 1)  # the word of the first non-whitespace byte at or after each byte
    for b in range(len(owner) - 1, -1, -1):
        following[b] = owner[b] if owner[b] >= 0 else following[b + 1]
    return [following[min(max(begin, 0), len(owner))] for begin, _ in spans]


def links(sources, source_words=None, target_words=None):
    """The sorted (i, j) pairs of the target positions j linked to their source positions
    sources[j]: pieces, or with `source_words` and `target_words` (the word of every piece, see
    words_of_pieces) the words that hold them, each pair once."""
    pairs = list(zip((int(i) for i in sources), range(len(sources))))
    if source_words is not None:
        pairs = {(source_words[i], target_words[j]) for i, j in pairs
                 if source_words[i] >= 0 and target_words[j] >= 0}
    return sorted(pairs, key=lambda pair: (pair[1], pair[0]))


def pharaoh(pairs):
    """'i-j i-j ...': the Pharaoh format of fast_align's output."""
    return " ".join(f"{i}-{j}" for i, j in pairs)


def parse_pharaoh(text):
    """The (i, j) pairs of a Pharaoh line; a ValueError for anything else."""
    pairs = []
    for field in text.split():
        i, sep, j = field.partition("-")
        if not sep or not i.isdigit() or not j.isdigit():
            raise ValueError(f"not an alignment pair: {field!r}")
        pairs.append((int(i), int(j)))
    return pairs
