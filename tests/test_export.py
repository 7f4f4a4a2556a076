"""`mt export` on a tiny random model with real SentencePiece tokenizers: the SavedModel translates as
`mt translate` does (in this process, and in a fresh one that cannot import mt), its record and
signatures, `mt.load` of it, the refusals before any work, and the atomic write."""

import json
import os
import random
import subprocess
import sys
import sysconfig

import numpy as np
import pytest
from click.testing import CliRunner

from mt.cli import cli
from mt.folders import ExportFolder
from tiny_run import make_tiny_run

pytest.importorskip("tensorflow_text")

WORDS = ["kat", "hund", "maus", "vogel", "fisch", "baum", "haus", "see"]
TARGET_WORDS = ["cat", "dog", "mouse", "bird", "fish", "tree", "house", "lake"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder with a tiny random model: its outputs are long and near ties are common, so a
    difference in the graph's arithmetic or order would show. The two sides' tokenizers differ, so that
    decoding with the wrong one would show too."""
    return make_tiny_run(tmp_path_factory.mktemp("run"), WORDS, TARGET_WORDS)


def sample_lines(count=70, seed=0):
    """Lines of several lengths, with the cases translate treats apart: empty and blank lines, surrounding
    whitespace (ASCII and not), characters the tokenizer never saw (byte pieces)."""
    rng = np.random.default_rng(seed)
    lines = [" ".join(rng.choice(WORDS, rng.integers(1, 9))) for _ in range(count)]
    lines[3:3] = ["", "   ", "  kat hund  ", "\u3000maus\u00a0", "kat 日本 😀 see", "Kat, HUND!"]
    return lines




def mt_translate(run_dir, lines, *args):
    """`mt translate`'s output lines for these lines and options, in this process."""
    path = run_dir / f"in-{abs(hash(tuple(lines)))}.txt"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    result = CliRunner().invoke(cli, ["translate", str(path), "--model", str(run_dir), *args],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout.split("\n")[:-1]


def export(run_dir, out, *args):
    return CliRunner().invoke(cli, ["export", "--model", str(run_dir), "--out", str(out), *args])


SETTINGS = {"greedy": ["--search", "greedy"], "beam": []}  # beam: translate's defaults (beam 5)


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    """{"greedy": DIR, "beam": DIR}: the run exported with each search, beam with translate's defaults;
    batches of 16 sentences, so that the test lines fill several."""
    folders = {}
    for name, args in SETTINGS.items():
        out = tmp_path_factory.mktemp("exports") / name
        result = export(run_dir, out, *args, "--batch-size", "16")
        assert result.exit_code == 0, result.output
        folders[name] = out
    return folders


def signature_translate(folder, lines):
    import tensorflow as tf

    out = tf.saved_model.load(str(folder)).signatures["serving_default"](text=tf.constant(lines, tf.string))
    return {key: value.numpy() for key, value in out.items()}


# -- the graph's text handling is Python's -------------------------------------------------------------


def test_the_graphs_strip_and_line_joining_are_pythons():
    import tensorflow as tf

    from mt.export import graph_one_line, graph_strip
    from mt.translate import _one_line

    rng = random.Random(0)
    alphabet = ["a", "b", " ", "\t", "\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\u00a0",
                "\u2028", "\u2029", "\u3000", "\u200b", "é", "日"]
    texts = ["", "\n", "\r\n", "a\r\n", "\r\r\n", "\n\n", "a\n\nb\n"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randrange(12))) for _ in range(400)]
    stripped = [t.decode("utf-8") for t in graph_strip(tf.constant(texts)).numpy()]
    joined = [t.decode("utf-8") for t in graph_one_line(tf.constant(texts)).numpy()]
    assert stripped == [t.strip() for t in texts]
    assert joined == [_one_line(t) for t in texts]


# -- the SavedModel translates as mt translate does --------------------------------------------------------


@pytest.mark.parametrize("name", list(SETTINGS))
def test_the_saved_model_translates_as_translate_does(run_dir, exported, name):
    lines = sample_lines()
    out = signature_translate(exported[name], lines)
    assert [t.decode("utf-8") for t in out["translations"]] == mt_translate(run_dir, lines, *SETTINGS[name])
    assert out["scores"].shape == out["log_probs"].shape == (len(lines),)
    assert out["scores"][3] == out["log_probs"][3] == 0.0  # the empty line
    assert np.all(out["log_probs"] <= 0) and np.all(np.isfinite(out["scores"]))
    if name == "beam":  # the length penalty ranks long outputs above their log-probability
        assert np.any(out["scores"] > out["log_probs"])
    else:
        np.testing.assert_array_equal(out["scores"], out["log_probs"])


def test_the_beam_scores_are_those_of_the_api(run_dir, exported):
    import mt

    lines = sample_lines(12)[:12]
    out = signature_translate(exported["beam"], lines)
    found = mt.load(str(run_dir)).hypotheses(lines)
    np.testing.assert_allclose(out["log_probs"], [h[0].log_prob for h in found], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["scores"], [h[0].score for h in found], rtol=1e-5, atol=1e-5)


def test_an_empty_batch_and_a_batch_of_blank_lines(exported):
    assert signature_translate(exported["greedy"], [])["translations"].shape == (0,)
    out = signature_translate(exported["beam"], ["", "  ", "\t"])
    assert list(out["translations"]) == [b"", b"", b""] and not np.any(out["scores"])


def test_the_record_and_the_info_signature(run_dir, exported):
    import tensorflow as tf

    record = ExportFolder(exported["beam"]).record()
    assert record["search"]["search"] == "beam" and record["search"]["beam_size"] == 5
    assert record["search"]["length_penalty"] == 0.6 and record["batch_size"] == 16
    assert record["run"] == os.path.abspath(run_dir) and record["weights"].endswith("best.weights.h5")
    assert record["model"]["dec_units"] == 24 and record["parameters"] > 0
    info = tf.saved_model.load(str(exported["beam"])).signatures["info"]()
    assert json.loads(info["metadata"].numpy().decode("utf-8")) == record
    assert ExportFolder(exported["greedy"]).record()["search"]["search"] == "greedy"


def test_mt_load_of_an_export_translates_with_its_settings_only(run_dir, exported):
    import mt
    from mt.errors import UserError

    model = mt.load(str(exported["beam"]))
    lines = sample_lines(10)
    assert model.translate(lines) == mt_translate(run_dir, lines)
    assert model.translate(lines[0]) == model.translate(lines)[0]
    assert model.translate(lines[:2], search="beam", beam_size=5) == model.translate(lines[:2])
    with pytest.raises(UserError, match=r"beam_size 3 \(exported: 5\).*chosen at export"):
        model.translate(lines, beam_size=3)
    with pytest.raises(UserError, match="needs the run folder"):
        model.score(["kat"], ["hund"])
    with pytest.raises(UserError, match="returns no alignments: load the run folder"):
        model.translate(lines, alignments=True)
    with pytest.raises(UserError, match="chosen at export"):
        mt.load(str(exported["beam"]), weights="last")
    assert model.info()["search"]["search"] == "beam"


# -- refusals, before any work, and the atomic write ------------------------------------------------------


def one_line_error(result, *words):
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert all(word in lines[0] for word in words), lines[0]


def leftovers(folder):
    return sorted(name for name in os.listdir(folder) if name.startswith("."))


def test_a_missing_run_is_refused(tmp_path):
    one_line_error(export(tmp_path / "nowhere", tmp_path / "out"), "nowhere", "not a run folder", "mt train")
    assert not (tmp_path / "out").exists()


def test_an_existing_folder_is_refused_unless_forced(run_dir, exported, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    one_line_error(export(run_dir, out), str(out), "not empty", "--force")
    assert os.listdir(out) == ["keep.txt"] and not leftovers(tmp_path)
    (tmp_path / "file").write_text("x")
    refused = export(run_dir, tmp_path / "file")  # a usage error of the command line
    assert refused.exit_code == 2 and "is a file" in refused.output
    one_line_error(export(run_dir, run_dir.parent, "--force"), "holds the run folder")

    result = export(run_dir, out, "--search", "greedy", "--force")
    assert result.exit_code == 0, result.output
    assert not (out / "keep.txt").exists() and ExportFolder(out).record()["search"]["search"] == "greedy"
    assert not leftovers(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert export(run_dir, empty, "--search", "greedy").exit_code == 0 and ExportFolder(empty).is_export()


def test_an_export_that_fails_leaves_nothing_and_keeps_the_old_folder(run_dir, exported, tmp_path, monkeypatch):
    import shutil

    import tensorflow as tf

    out = tmp_path / "out"
    shutil.copytree(exported["greedy"], out)
    before = ExportFolder(out).record()

    def failing_save(module, folder, signatures=None):
        with open(os.path.join(folder, "saved_model.pb"), "wb") as f:
            f.write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tf.saved_model, "save", failing_save)
    one_line_error(export(run_dir, out, "--force"), "No space left on device")
    one_line_error(export(run_dir, tmp_path / "new", "--search", "greedy"), "No space left on device")
    assert ExportFolder(out).record() == before and not (tmp_path / "new").exists()
    assert not leftovers(tmp_path)


def test_without_tensorflow_text_the_error_says_how_to_install_it(run_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_text", None)  # an import of it now fails
    one_line_error(export(run_dir, tmp_path / "out"), "tensorflow-text", "pip install 'mt[export]'")
    assert not (tmp_path / "out").exists()


def test_n_best_and_bad_settings_are_refused(run_dir, tmp_path):
    one_line_error(export(run_dir, tmp_path / "out", "--beam-size", "0"), "--beam-size")
    one_line_error(export(run_dir, tmp_path / "out", "--batch-size", "0"), "--batch-size")
    assert CliRunner().invoke(cli, ["export", "--model", str(run_dir), "--out", str(tmp_path / "o"),
                                    "--n-best", "2"]).exit_code == 2  # not an option of export
    assert not leftovers(tmp_path)


# -- TensorFlow alone, in a fresh process ------------------------------------------------------------------

PLAIN = """
import importlib.util, json, sys
sys.path.append(sys.argv[1])  # the site-packages of TensorFlow and tensorflow-text, without mt's path
assert importlib.util.find_spec("mt") is None, "mt can be imported"
import tensorflow as tf
import tensorflow_text  # registers the SentencePiece ops
lines = json.loads(sys.stdin.read())
translate = tf.saved_model.load(sys.argv[2]).signatures["serving_default"]
out = translate(text=tf.constant(lines, tf.string))
json.dump([t.decode("utf-8") for t in out["translations"].numpy()], sys.stdout)
"""


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SETTINGS))
def test_tensorflow_alone_translates_as_translate_does(run_dir, exported, name, tmp_path):
    lines = sample_lines()
    site = sysconfig.get_paths()["purelib"]
    # -I -S: no PYTHONPATH, no current folder, no site processing (so no editable install of mt)
    out = subprocess.run([sys.executable, "-I", "-S", "-c", PLAIN, site, str(exported[name])], cwd=tmp_path,
                         input=json.dumps(lines), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout) == mt_translate(run_dir, lines, *SETTINGS[name])


@pytest.mark.slow
def test_saved_model_cli_lists_the_signatures(exported):
    cli_path = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    if not os.path.exists(cli_path):
        pytest.skip("saved_model_cli is not installed beside this Python")
    out = subprocess.run([cli_path, "show", "--dir", str(exported["beam"]), "--all"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    serving = out.stdout.split("signature_def['serving_default']:")[1]
    assert "inputs['text']" in serving and "DT_STRING" in serving
    for output in ("translations", "scores", "log_probs"):
        assert f"outputs['{output}']" in serving
    assert "signature_def['info']:" in out.stdout and "outputs['metadata']" in out.stdout
