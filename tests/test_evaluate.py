"""mt.evaluate: sacrebleu scores with signatures, file checks, and the `mt evaluate` command."""

import json

import pytest
import sacrebleu
from click.testing import CliRunner

from mt import evaluate
from mt.cli import cli
from mt.errors import UserError
from mt.textio import read_lines

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
    with pytest.raises(UserError, match=r"hyp\.txt, line 2: invalid UTF-8"):
        evaluate.run(ref, str(bad), as_json=False, tokenize=None, lowercase=False)


def test_read_lines_splits_on_newline_only(tmp_path):
    path = tmp_path / "text.txt"
    path.write_bytes("\ufeffone\r\ntwo\u2028still two\nthree".encode("utf-8"))
    assert read_lines(path) == ["one", "two\u2028still two", "three"]


# -- several systems: sacrebleu's paired tests against the first ----------------------------------------

WORDS = ("the cat dog house sees a small big red green old new man woman child book reads writes near "
         "under river tree runs sleeps").split()


def corpus(count=80, seed=3):
    import random

    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 12))) + " ." for _ in range(count)]


def perturb(lines, every, seed):
    """Replace one word in every `every`-th line: a system about as good as another."""
    import random

    rng = random.Random(seed)
    out = []
    for number, line in enumerate(lines):
        words = line.split()
        if number % every == 0:
            words[rng.randrange(len(words) - 1)] = rng.choice(WORDS)
        out.append(" ".join(words))
    return out


def drop_last_word(lines, parity):
    """Drop the word before the final period in every other line (starting at `parity`)."""
    return [" ".join(line.split()[:-2] + ["."]) if number % 2 == parity else line
            for number, line in enumerate(lines)]


@pytest.fixture(autouse=True)
def fixed_sacrebleu_seed(monkeypatch):
    monkeypatch.delenv("SACREBLEU_SEED", raising=False)  # sacrebleu's default seed: reproducible p-values


def test_paired_tests_on_identical_systems_give_p_close_to_one():
    refs = corpus()
    hyps = perturb(refs, 2, seed=1)
    result = evaluate.paired_tests([("a", hyps), ("b", list(hyps))], refs, bootstrap_samples=200,
                                   randomization_trials=500)
    other = result["systems"][1]
    for metric in evaluate.METRICS:
        assert other["bootstrap"][metric]["p"] >= 0.95
        assert other["randomization"][metric]["p"] >= 0.95
        assert other[metric] == pytest.approx(result["systems"][0][metric])


def test_paired_tests_on_a_broken_system_give_small_p():
    refs = corpus()
    good = perturb(refs, 3, seed=1)
    broken = [" ".join(line.split()[:2]) for line in good]
    result = evaluate.paired_tests([("good", good), ("broken", broken)], refs, bootstrap_samples=200,
                                   randomization_trials=500)
    base, other = result["systems"]
    for metric in evaluate.METRICS:
        assert base["bootstrap"][metric]["p"] is None and base["randomization"][metric]["p"] is None
        assert other["bootstrap"][metric]["p"] < 0.05
        assert other["randomization"][metric]["p"] < 0.05
    assert other["bleu"] < base["bleu"] and other["ter"] > base["ter"]
    # the 95% interval of each system holds its score, and the broken system's lies below the good one's
    for system in (base, other):
        boot = system["bootstrap"]["bleu"]
        assert boot["mean"] - boot["ci95"] <= system["bleu"] <= boot["mean"] + boot["ci95"]
    assert other["bootstrap"]["bleu"]["mean"] + other["bootstrap"]["bleu"]["ci95"] < \
        base["bootstrap"]["bleu"]["mean"] - base["bootstrap"]["bleu"]["ci95"]


def test_paired_tests_on_equally_good_systems_are_not_significant():
    refs = corpus()
    a, b = drop_last_word(refs, 0), drop_last_word(refs, 1)  # the same error, in different lines
    result = evaluate.paired_tests([("a", a), ("b", b)], refs, bootstrap_samples=200, randomization_trials=500)
    assert result["systems"][1]["bootstrap"]["bleu"]["p"] > 0.05
    assert result["systems"][1]["randomization"]["bleu"]["p"] > 0.05


def test_paired_signatures_record_the_test_and_its_size():
    refs = corpus(20)
    result = evaluate.paired_tests([("a", refs), ("b", perturb(refs, 2, 1))], refs, bootstrap_samples=50,
                                   randomization_trials=60)
    assert "bs:50" in result["signatures"]["bootstrap"]["bleu"]
    assert "ar:60" in result["signatures"]["randomization"]["chrf"]
    assert result["bootstrap_samples"] == 50 and result["randomization_trials"] == 60


def test_run_with_one_hyp_in_a_list_is_the_single_file_result(tmp_path, capsys):
    ref, hyp = write(tmp_path / "ref.txt", REFS), write(tmp_path / "hyp.txt", GOOD)
    alone = evaluate.run(ref, hyp, as_json=True, tokenize=None, lowercase=False)
    listed = evaluate.run(ref, [hyp], as_json=True, tokenize=None, lowercase=False)
    assert alone == listed
    first, second = capsys.readouterr().out.splitlines()
    assert first == second


def test_cli_several_hyps_table(tmp_path):
    refs = corpus(30)
    ref = write(tmp_path / "ref.txt", refs)
    good, broken = write(tmp_path / "good.txt", perturb(refs, 3, 1)), write(tmp_path / "broken.txt", refs[::-1])
    outcome = CliRunner().invoke(cli, ["evaluate", "--ref", ref, "--hyp", good, "--hyp", broken])
    assert outcome.exit_code == 0, outcome.output
    out = outcome.stdout
    assert "p (bootstrap)" in out and "p (AR)" in out and f"{good} (baseline)" in out
    broken_rows = out.split(broken, 1)[1].splitlines()[:3]
    assert all(row.rstrip().endswith("*") for row in broken_rows)  # significant on BLEU, chrF and TER
    assert "bs:1000" in out


def test_cli_several_hyps_json(tmp_path):
    refs = corpus(30)
    ref = write(tmp_path / "ref.txt", refs)
    a, b = write(tmp_path / "a.txt", perturb(refs, 3, 1)), write(tmp_path / "b.txt", perturb(refs, 2, 5))
    outcome = CliRunner().invoke(cli, ["evaluate", "--ref", ref, "--hyp", a, "--hyp", b, "--json"])
    assert outcome.exit_code == 0, outcome.output
    parsed = json.loads(outcome.stdout)
    # the single-file keys, for the first system, then the comparison
    assert {"bleu", "chrf", "ter", "signatures", "sentences", "ref", "hyp"} <= set(parsed)
    assert parsed["hyp"] == a and parsed["sentences"] == 30
    assert [system["hyp"] for system in parsed["systems"]] == [a, b]
    assert parsed["systems"][0]["bleu"] == pytest.approx(parsed["bleu"])
    second = parsed["systems"][1]
    for metric in ("bleu", "chrf", "ter"):
        assert 0.0 < second["bootstrap"][metric]["p"] <= 1.0
        assert 0.0 < second["randomization"][metric]["p"] <= 1.0
        assert second["bootstrap"][metric]["ci95"] >= 0.0
    assert set(parsed["paired"]["signatures"]) == {"bootstrap", "randomization"}
    assert parsed["paired"]["bootstrap_samples"] == 1000 and parsed["paired"]["randomization_trials"] == 10000


def test_cli_several_hyps_line_count_mismatch_names_the_file(tmp_path):
    ref = write(tmp_path / "ref.txt", REFS)
    good, short = write(tmp_path / "good.txt", GOOD), write(tmp_path / "short.txt", GOOD[:1])
    outcome = CliRunner().invoke(cli, ["evaluate", "--ref", ref, "--hyp", good, "--hyp", short])
    assert outcome.exit_code == 1
    assert short in outcome.stderr and "line counts differ" in outcome.stderr
