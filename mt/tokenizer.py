"""SentencePiece tokenizers: training with fixed special ids, and a small wrapper for batch encode/decode.

Every model trained here has the same reserved ids, so the rest of the toolkit can rely on them:
pad 0, unk 1, bos 2, eos 3 (`PAD` ... `EOS`, the home of these ids), followed by 256 byte pieces
(`byte_fallback`): a character never seen in training is encoded as its UTF-8 bytes instead of <unk>, so
decoding gives the original text back. Byte fallback works for the `unigram`, `bpe` and `char` model types
(sentencepiece >= 0.2 supports it for `char` too).

Decisions:
- character_coverage is 1.0 (every character of the training text gets its own piece), except for huge
  alphabets (more than HUGE_ALPHABET distinct characters, e.g. Chinese or Japanese), where it is 0.9995:
  the rarest characters are then left to byte fallback instead of crowding out useful pieces.
- hard_vocab_limit is off: a small corpus gives a smaller vocabulary instead of an error.
- The vocabulary must hold the 4 special pieces, the 256 byte pieces and one piece per required character;
  a smaller size is a UserError that says which size to pass.
- Training reads at most `max_sentences` sentences (default 500,000), sampled with a fixed seed, so memory
  stays bounded on very large corpora (the trainer needs about 2.5 KB per 25-word sentence) and the same
  input gives the same model. Training from a temporary file through an iterator keeps the model bytes
  free of file names, so they are identical from run to run.
- Text is normalized by SentencePiece's built-in `nmt_nfkc` rule, at training and at encoding time alike.
"""

import io
import os
import re
import tempfile

import sentencepiece as spm

from mt.atomic import atomic_open
from mt.errors import UserError
from mt.runtime import usable_cores
from mt.textio import iter_lines

PAD, UNK, BOS, EOS = 0, 1, 2, 3  # the reserved ids of every model trained here
SPECIAL_PIECES = 4  # pad, unk, bos, eos
BYTE_PIECES = 256
MIN_VOCAB_SIZE = SPECIAL_PIECES + BYTE_PIECES + 1
HUGE_ALPHABET = 1000  # distinct characters above which character_coverage drops below 1.0
MODEL_TYPES = ("unigram", "bpe", "char")
DEFAULT_MAX_SENTENCES = 500_000  # about 1.2 GB of trainer memory for 25-word sentences


def _threads():
    """Threads for SentencePiece: every core this process may use."""
    return usable_cores()


def _is_path(value):
    """A single file path: a str or an os.PathLike."""
    return isinstance(value, (str, os.PathLike))


def _input_lines(sentences_or_files):
    """Yield training lines from a path, a list of os.PathLike paths, or an iterable of sentences."""
    if _is_path(sentences_or_files):
        yield from _file_lines(sentences_or_files)
    elif (isinstance(sentences_or_files, (list, tuple)) and sentences_or_files
          and all(isinstance(item, os.PathLike) for item in sentences_or_files)):
        for path in sentences_or_files:
            yield from _file_lines(path)
    else:
        yield from sentences_or_files


def _file_lines(path):
    """Yield the lines of a UTF-8 text file, without line ends."""
    if not os.path.isfile(path):
        raise UserError(f"tokenizer training file not found: {os.fspath(path)}")
    yield from iter_lines(os.fspath(path), on_invalid="replace")


def _write_training_text(sentences_or_files, path):
    """Write the training sentences to `path`, one a line; return (sentence count, distinct characters)."""
    count = 0
    chars = set()
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for sentence in _input_lines(sentences_or_files):
            line = " ".join(sentence.split())
            if not line:
                continue
            chars.update(line)
            f.write(line)
            f.write("\n")
            count += 1
    return count, len(chars)


def check_vocab_size(vocab_size):
    """Raise UserError if no corpus could fit in `vocab_size` pieces (special + byte pieces + 1 character)."""
    if vocab_size < MIN_VOCAB_SIZE:
        raise UserError(
            f"vocabulary size {vocab_size} is too small: {SPECIAL_PIECES} special and {BYTE_PIECES} byte pieces "
            f"are reserved, plus one piece per character; pass --vocab-size 300 or more (8000 is typical)")


def _too_small_error(vocab_size, message):
    """Turn SentencePiece's 'smaller than required_chars. A vs B' failure into a UserError, or return None."""
    match = re.search(r"required_chars\.\s*(\d+)\s*vs\s*(\d+)", message)
    if not match:
        return None
    needed = int(match.group(2))
    return UserError(
        f"vocabulary size {vocab_size} is too small for this corpus: it needs at least {needed} pieces "
        f"({SPECIAL_PIECES} special, {BYTE_PIECES} byte, {needed - SPECIAL_PIECES - BYTE_PIECES} characters); "
        f"pass --vocab-size {needed} or more")


def _train_from_lines(lines, model_writer, vocab_size, model_type, coverage, max_sentences):
    """Run the SentencePiece trainer on an iterator of lines with the toolkit's fixed settings."""
    spm.SentencePieceTrainer.train(
        sentence_iterator=(line.rstrip("\n") for line in lines), model_writer=model_writer,
        vocab_size=vocab_size, model_type=model_type, pad_id=PAD, unk_id=UNK, bos_id=BOS, eos_id=EOS,
        byte_fallback=True, character_coverage=coverage, hard_vocab_limit=False, num_threads=_threads(),
        minloglevel=2, input_sentence_size=max_sentences, shuffle_input_sentence=True)


def train_model_bytes(text_path, vocab_size, model_type, seed, alphabet_size, max_sentences):
    """Train SentencePiece on the text file `text_path` and return the serialized model."""
    coverage = 1.0 if alphabet_size <= HUGE_ALPHABET else 0.9995
    spm.set_random_generator_seed(seed)
    model = io.BytesIO()
    try:
        with open(text_path, encoding="utf-8", newline="\n") as lines:
            # An iterator, not `input=path`: the model would record the (temporary) path and differ each run.
            _train_from_lines(lines, model, vocab_size, model_type, coverage, max_sentences)
    except RuntimeError as e:
        message = str(e)
        raise (_too_small_error(vocab_size, message)
               or UserError(f"SentencePiece training failed: {message.strip().splitlines()[0]}")) from None
    return model.getvalue()


def train_tokenizer(sentences_or_files, model_prefix, vocab_size, model_type="unigram", seed=1234,
                    max_sentences=DEFAULT_MAX_SENTENCES):
    """Train a SentencePiece model and write it to `model_prefix + ".model"` (atomically); return that path.

    `sentences_or_files` is an iterable of sentences (str), or a path (str or os.PathLike) to a UTF-8 text
    file, or a list of os.PathLike paths (e.g. pathlib.Path) whose lines are all used. The text is written to
    a temporary file beside the model, so any iterator works and memory does not grow with the corpus.
    """
    if model_type not in MODEL_TYPES:
        raise UserError(f"unknown SentencePiece model type {model_type!r}: use one of {', '.join(MODEL_TYPES)}")
    check_vocab_size(vocab_size)
    if max_sentences <= 100:
        raise ValueError(f"max_sentences must be above 100 (a SentencePiece limit), got {max_sentences}")
    model_path = os.fspath(model_prefix) + ".model"
    folder = os.path.dirname(os.path.abspath(model_path))
    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".spm-train-", dir=folder) as tmp:
        text_path = os.path.join(tmp, "train.txt")
        count, alphabet_size = _write_training_text(sentences_or_files, text_path)
        if count == 0:
            raise UserError("no text to train the tokenizer on: every training sentence is empty")
        model = train_model_bytes(text_path, vocab_size, model_type, seed, alphabet_size, max_sentences)
    with atomic_open(model_path, "wb") as f:
        f.write(model)
    return model_path


class Tokenizer:
    """A trained SentencePiece model: batch encode to ids (no bos/eos added) and decode back to text."""

    PAD, UNK, BOS, EOS = PAD, UNK, BOS, EOS

    def __init__(self, path):
        """Load the model at `path`; a missing file or unexpected special ids is a UserError."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise UserError(f"tokenizer model not found: {path}")
        self.path = path
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.Load(path)
        except (OSError, RuntimeError):
            raise UserError(f"not a SentencePiece model: {path}") from None
        ids = (self._sp.pad_id(), self._sp.unk_id(), self._sp.bos_id(), self._sp.eos_id())
        if ids != (self.PAD, self.UNK, self.BOS, self.EOS):
            raise UserError(f"{path}: special ids (pad, unk, bos, eos) are {ids}, expected (0, 1, 2, 3); "
                            "train the tokenizer with `mt preprocess`")
        self._threads = _threads()

    @property
    def vocab_size(self):
        """Number of pieces, the reserved ones included."""
        return self._sp.vocab_size()

    def encode(self, texts):
        """Encode a list of strings to a list of id lists, without bos/eos."""
        if isinstance(texts, str):
            raise TypeError("Tokenizer.encode takes a list of strings, not one string")
        return self._sp.encode(list(texts), out_type=int, num_threads=self._threads)

    def decode(self, id_lists):
        """Decode id lists (lists or numpy arrays) to strings; pad, bos and eos ids are ignored."""
        lists = [ids.tolist() if hasattr(ids, "tolist") else [int(i) for i in ids] for ids in id_lists]
        return self._sp.decode(lists, num_threads=self._threads)

    def encode_with_spans(self, texts):
        """`encode`, and where each piece lies in its text: for every text (ids, spans), spans the
        (begin, end) byte offsets of every piece's surface in the text's UTF-8 (SentencePiece maps them
        back through its normalization to the text as given)."""
        protos = self._sp.encode(list(texts), out_type="proto", num_threads=self._threads)
        return [([p.id for p in proto.pieces], [(p.begin, p.end) for p in proto.pieces]) for proto in protos]

    def decode_with_spans(self, id_lists):
        """`decode`, and where each piece lies in the text: for every id list (text, spans), spans as in
        encode_with_spans."""
        lists = [ids.tolist() if hasattr(ids, "tolist") else [int(i) for i in ids] for ids in id_lists]
        protos = self._sp.decode(lists, out_type="proto", num_threads=self._threads)
        return [(proto.text, [(p.begin, p.end) for p in proto.pieces]) for proto in protos]

    def id_to_piece(self, piece_id):
        """The piece string of one id."""
        return self._sp.id_to_piece(int(piece_id))
