"""SentencePiece training and the Tokenizer wrapper: special ids, round trips, determinism, size errors."""

import pathlib
import random
import re

import pytest

from mt.errors import UserError
from mt.tokenizer import BYTE_PIECES, SPECIAL_PIECES, Tokenizer, train_tokenizer

WORDS = ["el", "gato", "come", "pescado", "la", "casa", "es", "grande", "perro", "corre", "rápido", "niño",
         "juega", "con", "una", "pelota", "roja", "sol", "brilla", "hoy"]


def sentences(count=300, seed=0):
    """A small seeded corpus of Spanish-looking sentences."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9))) + " ." for _ in range(count)]


def train(tmp_path, name="m", model_type="unigram", vocab_size=320, data=None):
    """Train a model under tmp_path/NAME (seed 7); return the .model path."""
    return train_tokenizer(sentences() if data is None else data, tmp_path / name, vocab_size, model_type, seed=7)


def test_special_ids_are_pad_unk_bos_eos(tmp_path):
    tok = Tokenizer(train(tmp_path))
    assert (Tokenizer.PAD, Tokenizer.UNK, Tokenizer.BOS, Tokenizer.EOS) == (0, 1, 2, 3)
    assert [tok.id_to_piece(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]
    ids = tok.encode(["el gato come pescado ."])[0]
    assert ids and min(ids) > Tokenizer.EOS  # no bos/eos added, nothing unknown


@pytest.mark.parametrize("model_type", ["unigram", "bpe", "char"])
def test_round_trip_including_unseen_characters(tmp_path, model_type):
    tok = Tokenizer(train(tmp_path, model_type=model_type))
    texts = ["el niño juega con una pelota roja .", "Zürich € 東京 ж", ""]
    ids = tok.encode(texts)
    assert tok.decode(ids) == texts
    assert Tokenizer.UNK not in ids[1]  # byte fallback, not <unk>
    assert any(re.fullmatch(r"<0x[0-9A-F]{2}>", piece) for piece in [tok.id_to_piece(i) for i in tok.encode(["€"])[0]])


def test_decode_ignores_pad_bos_eos_and_accepts_arrays(tmp_path):
    import numpy as np

    tok = Tokenizer(train(tmp_path))
    ids = tok.encode(["la casa es grande ."])[0]
    padded = [Tokenizer.BOS] + ids + [Tokenizer.EOS, Tokenizer.PAD, Tokenizer.PAD]
    assert tok.decode([padded, np.array(ids, dtype=np.int32)]) == ["la casa es grande ."] * 2


def test_same_input_gives_identical_model(tmp_path):
    first = pathlib.Path(train(tmp_path, "a")).read_bytes()
    second = pathlib.Path(train(tmp_path, "b")).read_bytes()
    assert first == second
    other = pathlib.Path(train(tmp_path, "c", data=sentences(seed=1))).read_bytes()
    assert other != first


def test_file_input_gives_same_model_as_sentences(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(sentences()) + "\n", encoding="utf-8")
    from_file = train_tokenizer(str(text), tmp_path / "f", 320, seed=7)
    from_list = train_tokenizer([text], tmp_path / "l", 320, seed=7)
    expected = pathlib.Path(train(tmp_path, "s")).read_bytes()
    assert pathlib.Path(from_file).read_bytes() == expected
    assert pathlib.Path(from_list).read_bytes() == expected


def test_small_corpus_gives_smaller_vocabulary_instead_of_failing(tmp_path):
    tok = Tokenizer(train(tmp_path, vocab_size=5000))
    assert SPECIAL_PIECES + BYTE_PIECES < tok.vocab_size < 5000


def test_impossibly_small_vocabulary_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="--vocab-size"):
        train(tmp_path, vocab_size=100)
    assert not list(tmp_path.iterdir())


def test_vocabulary_too_small_for_the_alphabet_names_the_size_needed(tmp_path):
    data = sentences()
    with pytest.raises(UserError) as error:
        train(tmp_path, vocab_size=SPECIAL_PIECES + BYTE_PIECES + 3, data=data)
    needed = int(re.search(r"--vocab-size (\d+)", str(error.value)).group(1))
    assert needed == SPECIAL_PIECES + BYTE_PIECES + len(set("".join(data)))  # the space becomes '▁'
    assert Tokenizer(train(tmp_path, vocab_size=needed, data=data)).vocab_size == needed


def test_encode_takes_a_list_and_missing_model_is_a_user_error(tmp_path):
    tok = Tokenizer(train(tmp_path))
    with pytest.raises(TypeError):
        tok.encode("el gato")
    with pytest.raises(UserError, match="nope.model"):
        Tokenizer(tmp_path / "nope.model")
