"""mt.evaluate: sacrebleu scores with signatures, file checks, and the `mt evaluate` command."""

import json

import pytest
import sacrebleu
from click.testing import CliRunner

from mt import evaluate
from mt.cli import cli
from mt.errors import UserError

REFS = [
    "the cat sat on the mat .",
    "there is a book on the table .",
    "she reads a long letter every morning .",
]
GOOD = [
    "the cat sat on the mat .",
    "there is a book on a table .",
    "she reads a long letter each morning .",
]
BAD = [
    "a dog stood near the door .",
    "books are tables .",
    "morning letter .",
]


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def test_identical_is_perfect():
    result = evaluate.score(REFS, REFS)
    assert result["bleu"] == pytest.approx(100.0)
    assert result["ter"] == pytest.approx(0.0)
    assert result["chrf"] == pytest.approx(100.0)
    assert result["sentences"] == 3


def test_better_translation_scores_better():
    good, bad = evaluate.score(GOOD, REFS), evaluate.score(BAD, REFS)
    assert bad["bleu"] < good["bleu"] < 100.0
    assert bad["chrf"] < good["chrf"]
    assert bad["ter"] > good["ter"] > 0.0  # TER is an error rate: lower is better


def test_signatures_name_settings_and_version():
    result = evaluate.score(GOOD, REFS, tokenize="char", lowercase=True)
    assert set(result["signatures"]) == {"bleu", "chrf", "ter"}
    for signature in result["signatures"].values():
        assert f"version:{sacrebleu.__version__}" in signature
    assert "tok:char" in result["signatures"]["bleu"]
    assert "case:lc" in result["signatures"]["bleu"]


def test_empty_hypothesis_is_an_error():
    with pytest.raises(UserError):
        evaluate.score([], [])


def test_unknown_tokenizer_is_an_error():
    with pytest.raises(UserError, match="13a"):
        evaluate.score(GOOD, REFS, tokenize="nonsense")


def test_run_returns_scores_and_paths(tmp_path, capsys):
    ref, hyp = write(tmp_path / "ref.txt", REFS), write(tmp_path / "hyp.txt", GOOD)
    result = evaluate.run(ref, hyp, as_json=False, tokenize=None, lowercase=False)
    assert result["ref"] == ref and result["hyp"] == hyp
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("BLEU ") and table[1].startswith("chrF ") and table[2].startswith("TER ")
    assert f"{result['bleu']:.2f}" in table[0]


def test_cli_json_output(tmp_path):
    ref, hyp = write(tmp_path / "ref.txt", REFS), write(tmp_path / "hyp.txt", GOOD)
    outcome = CliRunner().invoke(cli, ["evaluate", "--ref", ref, "--hyp", hyp, "--json"])
    assert outcome.exit_code == 0, outcome.output
    parsed = json.loads(outcome.stdout)
    assert set(parsed) == {"bleu", "chrf", "ter", "signatures", "sentences", "ref", "hyp"}
    assert set(parsed["signatures"]) == {"bleu", "chrf", "ter"}
    assert parsed["sentences"] == 3 and parsed["ref"] == ref and parsed["hyp"] == hyp


def test_cli_line_count_mismatch(tmp_path):
    ref, hyp = write(tmp_path / "ref.txt", REFS), write(tmp_path / "hyp.txt", GOOD[:2])
    outcome = CliRunner().invoke(cli, ["evaluate", "--ref", ref, "--hyp", hyp])
    assert outcome.exit_code == 1
    lines = outcome.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert ref in lines[0] and hyp in lines[0] and "2" in lines[0] and "3" in lines[0]


def test_invalid_utf8_names_file_and_line(tmp_path):
    ref = write(tmp_path / "ref.txt", REFS)
    bad = tmp_path / "hyp.txt"
    bad.write_bytes(b"fine\nbro\xffken\nfine\n")
    with pytest.raises(UserError, match=r"hyp\.txt: line 2: invalid UTF-8"):
        evaluate.run(ref, str(bad), as_json=False, tokenize=None, lowercase=False)


def test_read_lines_splits_on_newline_only(tmp_path):
    path = tmp_path / "text.txt"
    path.write_bytes("\ufeffone\r\ntwo\u2028still two\nthree".encode("utf-8"))
    assert evaluate.read_lines(path) == ["one", "two\u2028still two", "three"]
