"""`mt preprocess`: input checks, cleaning and filtering, dev hold-out, tokenizers, shards and manifest."""

import os
import json
import random

import numpy as np
import pytest
from click.testing import CliRunner

from mt.cli import cli
from mt.errors import UserError
from mt.preprocess import RATIO_MIN_WORDS, drop_reason, normalize, run, word_count
from mt.folders import DataFolder
from mt.tokenizer import Tokenizer

SRC_WORDS = "el la un gato perro casa come bebe grande rojo azul agua pan hoy con".split()
TGT_WORDS = "the the a cat dog house eats drinks big red blue water bread today with".split()
VOCAB = 320


def tag(index):
    """A unique lowercase word for line `index`, so every generated line is distinct."""
    letters = ""
    while True:
        index, digit = divmod(index, 26)
        letters += chr(ord("a") + digit)
        if index == 0:
            return "q" + letters


def make_pairs(count, seed=0):
    """`count` distinct aligned (source, target) pairs of 3 to 8 words plus a full stop."""
    rng = random.Random(seed)
    pairs = []
    for i in range(count):
        idx = [rng.randrange(len(SRC_WORDS)) for _ in range(rng.randint(2, 7))]
        pairs.append((" ".join(SRC_WORDS[j] for j in idx) + f" {tag(i)} .",
                      " ".join(TGT_WORDS[j] for j in idx) + f" {tag(i)} ."))
    return pairs


def write_corpus(folder, pairs, name="train"):
    """Write pairs as NAME.es / NAME.en; return both paths."""
    src, tgt = folder / f"{name}.es", folder / f"{name}.en"
    src.write_text("".join(s + "\n" for s, _ in pairs), encoding="utf-8")
    tgt.write_text("".join(t + "\n" for _, t in pairs), encoding="utf-8")
    return src, tgt


def prep(out, **options):
    """Run the stage with small test settings, overridden by `options`."""
    settings = {"vocab_size": VOCAB, "dev_size": 20, "seed": 1}
    settings.update(options)
    return run(out=str(out), **settings)


def lines(path):
    """The lines of a UTF-8 text file."""
    return path.read_text(encoding="utf-8").splitlines()


def decoded_train_sources(out):
    """The training source sentences of a prepared folder, decoded from its shards."""
    src, _ = DataFolder(out).read_split("train")
    return Tokenizer(out / "src.spm.model").decode(src)


def test_line_count_mismatch_names_both_files_and_counts(tmp_path):
    src, tgt = write_corpus(tmp_path, make_pairs(7))
    tgt.write_text("".join(f"line {i}\n" for i in range(5)), encoding="utf-8")
    with pytest.raises(UserError) as error:
        prep(tmp_path / "out", src=str(src), tgt=str(tgt))
    message = str(error.value)
    assert str(src) in message and str(tgt) in message and "7" in message and "5" in message
    assert "\n" not in message
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_invalid_utf8_names_file_and_line_and_replace_continues(tmp_path):
    src, tgt = write_corpus(tmp_path, make_pairs(60))
    data = src.read_bytes().split(b"\n")
    data[2] = data[2] + b" caf\xe9"
    src.write_bytes(b"\n".join(data))
    with pytest.raises(UserError) as error:
        prep(tmp_path / "out", src=str(src), tgt=str(tgt))
    assert f"{src}, line 3" in str(error.value) and "--on-invalid replace" in str(error.value)
    manifest = prep(tmp_path / "out", src=str(src), tgt=str(tgt), on_invalid="replace")
    assert manifest["sources"][str(src)]["replaced_lines"] == 1
    assert manifest["splits"]["train"]["pairs"] + manifest["splits"]["dev"]["pairs"] == 60


def test_empty_long_and_bad_ratio_pairs_are_dropped_and_counted(tmp_path):
    good = make_pairs(40)
    bad = [("  \t ", "the cat ."), ("el gato .", "\u00a0"),  # empty after cleaning
           (" ".join(["gato"] * 21), " ".join(["cat"] * 21)),  # too long for max_len 20
           (" ".join(["gato"] * 12), "the cat ."),  # ratio 12 / 3
           ("Sí", "Yes , of course ."),  # ratio 5, but too short for the ratio test: kept
           ("Hola", "Hello there , how are you ?")]  # longer side has 6 words, ratio 6: dropped
    src, tgt = write_corpus(tmp_path, good + bad)
    dev_src, dev_tgt = write_corpus(tmp_path, make_pairs(5, seed=3), name="dev")
    manifest = prep(tmp_path / "out", src=str(src), tgt=str(tgt), dev_src=str(dev_src), dev_tgt=str(dev_tgt),
                    max_len=20, max_ratio=3.0)
    assert manifest["dropped"] == {"empty": 2, "too_long": 1, "ratio": 2}
    assert manifest["splits"]["train"]["pairs"] == len(good) + 1
    assert "Sí" in decoded_train_sources(tmp_path / "out")


def test_dev_gets_whitespace_cleaning_but_no_length_filter(tmp_path):
    src, tgt = write_corpus(tmp_path, make_pairs(40))
    long_pair = (" ".join(["gato"] * 30), "a\tcat \u00a0 .")
    dev_src, dev_tgt = write_corpus(tmp_path, make_pairs(4, seed=5) + [long_pair, ("", "empty source")],
                                    name="dev")
    manifest = prep(tmp_path / "out", src=str(src), tgt=str(tgt), dev_src=str(dev_src), dev_tgt=str(dev_tgt),
                    max_len=20)
    assert manifest["splits"]["dev"]["pairs"] == 5
    assert manifest["splits"]["dev"]["dropped"] == {"empty": 1}
    assert lines(tmp_path / "out" / "dev.tgt.txt")[-1] == "a cat ."


def test_cleaning_helpers():
    assert normalize("  a\t b\u00a0\u00a0c \r\n") == "a b c"
    assert word_count("") == 0 and word_count("a b c") == 3
    assert word_count("東京 tower") == 4  # two words, plus one per Han character
    short = " ".join(["w"] * (RATIO_MIN_WORDS - 1))
    assert drop_reason("w", short, max_len=100, max_ratio=3.0) is None
    assert drop_reason("w", short + " w", max_len=100, max_ratio=3.0) == "ratio"
    assert drop_reason("w", "", max_len=None, max_ratio=None) == "empty"


def test_tsv_input_and_bad_tsv_line(tmp_path):
    pairs = make_pairs(50)
    tsv = tmp_path / "train.tsv"
    tsv.write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    manifest = prep(tmp_path / "out", tsv=str(tsv))
    assert manifest["splits"]["train"]["pairs"] + manifest["splits"]["dev"]["pairs"] == 50
    assert set(lines(tmp_path / "out" / "dev.src.txt")) <= {s for s, _ in pairs}
    text = tsv.read_text(encoding="utf-8").split("\n")
    text[3] = text[3] + "\textra"
    tsv.write_text("\n".join(text), encoding="utf-8")
    with pytest.raises(UserError, match=f"{tsv}, line 4: expected exactly one tab"):
        prep(tmp_path / "out2", tsv=str(tsv))


def test_blank_lines_of_a_tsv_are_empty_pairs_not_errors(tmp_path):
    pairs = make_pairs(50)
    tsv = tmp_path / "train.tsv"
    tsv.write_text("".join(f"{s}\t{t}\n" for s, t in pairs) + "\n", encoding="utf-8")  # a trailing blank line
    manifest = prep(tmp_path / "out", tsv=str(tsv))
    assert manifest["splits"]["train"]["pairs"] + manifest["splits"]["dev"]["pairs"] == 50
    assert manifest["dropped"]["empty"] == 1


def test_inputs_may_be_pipes_read_once(tmp_path):
    """`--src <(zcat a.gz)`: each input is read once, as a stream, and the manifest still records its
    line count and SHA-256."""
    import hashlib
    import threading

    pairs = make_pairs(60)
    src_file, tgt_file = write_corpus(tmp_path, pairs)
    fifos = []
    for name, source in (("src.fifo", src_file), ("tgt.fifo", tgt_file)):
        path = tmp_path / name
        os.mkfifo(path)
        data = source.read_bytes()
        # a fifo can be opened and read once: a second read of it would block (or see nothing)
        thread = threading.Thread(target=lambda p=path, d=data: p.write_bytes(d), daemon=True)
        thread.start()
        fifos.append((path, data, thread))
    manifest = prep(tmp_path / "out", src=str(fifos[0][0]), tgt=str(fifos[1][0]))
    assert manifest["splits"]["train"]["pairs"] + manifest["splits"]["dev"]["pairs"] == 60
    for path, data, thread in fifos:
        thread.join(5)
        entry = manifest["sources"][str(path)]
        assert entry["lines"] == 60 and entry["sha256"] == hashlib.sha256(data).hexdigest()


def test_held_out_dev_is_seeded_and_disjoint_from_train(tmp_path):
    src, tgt = write_corpus(tmp_path, make_pairs(200))
    dev = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        manifest = prep(tmp_path / name, src=str(src), tgt=str(tgt), seed=seed, dev_size=1000)
        dev[name] = lines(tmp_path / name / "dev.src.txt")
        assert manifest["splits"]["dev"]["pairs"] == len(dev[name]) == 20  # 10% of a small corpus
    assert dev["a"] == dev["b"]
    assert dev["a"] != dev["c"]
    train = decoded_train_sources(tmp_path / "a")
    assert len(train) == 180 and not set(train) & set(dev["a"])
    assert sorted(train + dev["a"]) == sorted(lines(src))


def test_joint_vocabulary_gives_identical_models(tmp_path):
    src, tgt = write_corpus(tmp_path, make_pairs(80))
    manifest = prep(tmp_path / "out", src=str(src), tgt=str(tgt), joint=True)
    out = tmp_path / "out"
    assert (out / "src.spm.model").read_bytes() == (out / "tgt.spm.model").read_bytes()
    assert manifest["vocab"]["joint"] is True and manifest["vocab"]["src"] == manifest["vocab"]["tgt"]
    separate = prep(tmp_path / "sep", src=str(src), tgt=str(tgt))
    assert (tmp_path / "sep" / "src.spm.model").read_bytes() != (tmp_path / "sep" / "tgt.spm.model").read_bytes()
    assert separate["vocab"]["joint"] is False


def test_manifest_counts_match_the_shards(tmp_path):
    src, tgt = write_corpus(tmp_path, make_pairs(120))
    out = tmp_path / "out"
    manifest = prep(out, src=str(src), tgt=str(tgt))
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["format"] == 1 and manifest["tokenizers"] == {"src": "src.spm.model", "tgt": "tgt.spm.model"}
    for split in ("train", "dev"):
        entry = manifest["splits"][split]
        src_seqs, tgt_seqs = DataFolder(out).read_split(split)
        assert entry["pairs"] == len(src_seqs) == len(tgt_seqs)
        for side, seqs in (("src", src_seqs), ("tgt", tgt_seqs)):
            lengths = np.array([len(s) for s in seqs])
            assert entry[f"{side}_tokens"] == lengths.sum()
            assert entry[f"{side}_len"]["max"] == lengths.max()
            assert entry[f"{side}_len"]["mean"] == pytest.approx(lengths.mean(), abs=0.01)
    dev_src, _ = DataFolder(out).read_split("dev")
    assert Tokenizer(out / "src.spm.model").decode(dev_src) == lines(out / "dev.src.txt")
    assert manifest["sources"][str(src)]["lines"] == 120
    assert manifest["vocab"]["src"] == Tokenizer(out / "src.spm.model").vocab_size


def test_option_and_file_errors(tmp_path):
    src, tgt = write_corpus(tmp_path, make_pairs(10))
    with pytest.raises(UserError, match="--src needs --tgt"):
        prep(tmp_path / "out", src=str(src))
    with pytest.raises(UserError, match="not both"):
        prep(tmp_path / "out", src=str(src), tgt=str(tgt), tsv=str(src))
    with pytest.raises(UserError, match="--dev-tgt needs --dev-src"):
        prep(tmp_path / "out", src=str(src), tgt=str(tgt), dev_tgt=str(tgt))
    with pytest.raises(UserError, match="missing.en"):
        prep(tmp_path / "out", src=str(src), tgt=str(tmp_path / "missing.en"))
    one = write_corpus(tmp_path, make_pairs(1), name="one")
    with pytest.raises(UserError, match="at least 2"):
        prep(tmp_path / "out", src=str(one[0]), tgt=str(one[1]))
    assert not (tmp_path / "out").exists()


def test_failed_rerun_never_leaves_a_complete_looking_folder(tmp_path):
    src, tgt = write_corpus(tmp_path, make_pairs(60))
    out = tmp_path / "out"
    prep(out, src=str(src), tgt=str(tgt))
    assert (out / "manifest.json").exists()
    with pytest.raises(UserError, match="--vocab-size"):
        prep(out, src=str(src), tgt=str(tgt), vocab_size=265)  # too small for this alphabet
    assert not (out / "manifest.json").exists()
    prep(out, src=str(src), tgt=str(tgt))
    assert (out / "manifest.json").exists()


def test_cli_reports_a_mismatch_on_one_line_with_exit_code_1(tmp_path):
    src, tgt = write_corpus(tmp_path, make_pairs(6))
    tgt.write_text("only one line\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["preprocess", "--src", str(src), "--tgt", str(tgt),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and result.stderr.strip().splitlines()[-1] == errors[0]
    assert "Traceback" not in result.output + result.stderr
    assert "has 6 lines" in errors[0] and "has 1:" in errors[0]
    assert not DataFolder(tmp_path / "out").is_complete()


def test_a_corpus_can_be_encoded_with_the_tokenizers_of_another_data_folder(tmp_path):
    first = write_corpus(tmp_path, make_pairs(100, seed=1), "a")
    second = write_corpus(tmp_path, make_pairs(100, seed=2), "b")
    prep(tmp_path / "A", src=str(first[0]), tgt=str(first[1]))
    manifest = prep(tmp_path / "B", src=str(second[0]), tgt=str(second[1]), tokenizers_from=str(tmp_path / "A"),
                    vocab_size=999)  # unused: no tokenizer is trained
    a, b = DataFolder(tmp_path / "A"), DataFolder(tmp_path / "B")
    for side in ("src", "tgt"):
        assert open(a.tokenizer_path(side), "rb").read() == open(b.tokenizer_path(side), "rb").read()
    assert manifest["vocab"]["src"] == a.vocab_sizes()[0] and manifest["settings"]["tokenizers_from"]
    src, _ = b.read_split("train")
    texts = Tokenizer(b.tokenizer_path("src")).decode(src)
    assert set(texts) <= {s for s, _ in make_pairs(100, seed=2)}


def test_tokenizers_from_a_folder_that_has_none_is_a_one_line_error(tmp_path):
    src, tgt = write_corpus(tmp_path, make_pairs(30))
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, ["preprocess", "--src", str(src), "--tgt", str(tgt), "--out",
                                      str(tmp_path / "out"), "--tokenizers-from", str(tmp_path / "empty")])
    assert result.exit_code == 1 and "neither a run folder" in result.stderr.strip().splitlines()[-1]
