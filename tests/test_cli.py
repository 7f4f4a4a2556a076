"""The command line: instant help, one-line errors, and the whole pipeline on a tiny model."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mt.cli import cli
from mt.folders import DataFolder, RunFolder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = """
model: {emb_dim: 16, enc_units: 16, dec_units: 32, dropout: 0.0}
train: {batch_tokens: 400, learning_rate: 0.01, eval_every: 10, eval_bleu_sentences: 20, checkpoint_every: 10,
        log_every: 5, precision: float32}
"""


def test_help_imports_neither_tensorflow_nor_matplotlib():
    commands = [[c, "--help"] for c in ("preprocess", "train", "translate", "score", "average", "evaluate",
                                        "serve", "export")] + [["--help"]]
    commands += [["inspect", c, "--help"] for c in ("attention", "cells", "curves")] + [["pipeline", "run", "--help"]]
    commands += [["lm", c, "--help"] for c in ("train", "sample", "evaluate")] + [["lm", "--help"]]
    code = ("import sys; from click.testing import CliRunner; from mt.cli import cli; "
            f"r = [CliRunner().invoke(cli, c) for c in {commands!r}]; "
            "assert all(x.exit_code == 0 for x in r), [x.output for x in r]; "
            "assert 'tensorflow' not in sys.modules and 'matplotlib' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def test_loading_tensorflow_leaves_out_matplotlib_but_it_can_be_imported_after():
    pytest.importorskip("matplotlib")
    code = ("import sys; from mt.runtime import import_tensorflow_quietly; import_tensorflow_quietly(); "
            "import keras; assert 'matplotlib' not in sys.modules, 'imported'; "
            "import matplotlib.pyplot; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize("args, words", [
    (["train", "--data", "nowhere", "--out", "run"], ["nowhere", "mt preprocess"]),
    (["translate", "in.txt", "--model", "nowhere"], ["nowhere"]),
    (["train", "--data", ".", "--out", "run", "--config", "no-such-config"], []),
])
def test_bad_input_gives_one_line_and_exit_1(tmp_path, monkeypatch, args, words):
    (tmp_path / "in.txt").write_text("hola\n")
    monkeypatch.chdir(tmp_path)
    if "--config" in args:
        (tmp_path / DataFolder.MANIFEST).write_text("{}")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert all(w in lines[0] for w in words)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Preprocess 400 pairs of the embedded corpus and train a tiny model for 30 steps."""
    root = tmp_path_factory.mktemp("pipeline")
    for split, n in (("train", 400), ("dev", 40)):
        for side in ("src", "tgt"):
            with open(os.path.join(ROOT, "data", "default", f"{split}.{side}"), encoding="utf-8") as f:
                lines = f.read().splitlines()[:n]
            (root / f"{split}.{side}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "tiny.yaml").write_text(TINY)
    runner = CliRunner()
    result = runner.invoke(cli, ["preprocess", "--src", str(root / "train.src"), "--tgt", str(root / "train.tgt"),
                                 "--dev-src", str(root / "dev.src"), "--dev-tgt", str(root / "dev.tgt"),
                                 "--out", str(root / "data"), "--vocab-size", "300"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["train", "--data", str(root / "data"), "--out", str(root / "run"),
                                 "--config", str(root / "tiny.yaml"), "--max-steps", "30"])
    assert result.exit_code == 0, result.output
    return root


def test_train_writes_a_complete_run_folder(tiny_run):
    run = RunFolder(tiny_run / "run")
    for path in (run.config_path, run.data_info_path, run.tokenizer_path("src"), run.tokenizer_path("tgt"),
                 run.done_path, run.weights_path("best"), run.weights_path("last"), run.metrics_path):
        assert os.path.exists(path), path
    done = run.done()
    assert done["step"] == 30 and done["reason"] == "max_steps"
    with open(run.metrics_path, encoding="utf-8") as f:
        records = [json.loads(line) for line in f.read().splitlines()]
    train_losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert train_losses[-1] < train_losses[0]
    assert any(r["kind"] == "dev" and "bleu" in r for r in records)
    assert any(name.startswith("events") for name in os.listdir(run.tensorboard_dir))


def test_a_finished_run_says_so(tiny_run):
    result = CliRunner().invoke(cli, ["train", "--data", str(tiny_run / "data"), "--out", str(tiny_run / "run")])
    assert result.exit_code == 0 and "already finished at step 30" in result.output


def test_translate_keeps_one_line_per_input_line(tiny_run):
    lines = ["", "ka rali miba.", "", "em rali teli ri roma ka sari miba.", "  "]
    (tiny_run / "in.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tiny_run / "out.txt"
    result = CliRunner().invoke(cli, ["translate", str(tiny_run / "in.txt"), "--model", str(tiny_run / "run"),
                                      "-o", str(out), "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    got = out.read_text(encoding="utf-8").split("\n")
    assert len(got) == len(lines) + 1 and got[-1] == ""
    assert got[0] == "" and got[2] == "" and got[4] == ""
    for i in (1, 3):  # in input order: each line as translated on its own
        alone = CliRunner().invoke(cli, ["translate", "-", "--model", str(tiny_run / "run")], input=lines[i])
        assert got[i] == alone.stdout.rstrip("\n")


def test_translate_reads_stdin_and_writes_stdout(tiny_run):
    result = CliRunner().invoke(cli, ["translate", "-", "--model", str(tiny_run / "run")],
                                input="ka rali miba.\nkem dadan mibati.\n")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 2


def test_evaluate_scores_the_translation(tiny_run):
    hyp = tiny_run / "hyp.txt"
    CliRunner().invoke(cli, ["translate", str(tiny_run / "dev.src"), "--model", str(tiny_run / "run"),
                             "-o", str(hyp)])
    result = CliRunner().invoke(cli, ["evaluate", "--ref", str(tiny_run / "dev.tgt"), "--hyp", str(hyp), "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert 0.0 <= scores["bleu"] < 100.0 and "nrefs:1" in scores["signatures"]["bleu"]


def test_translate_decodes_in_the_training_precision_unless_told(tiny_run, tmp_path):
    import keras
    import numpy as np

    from mt.translate import load_translator

    bf16_run = tmp_path / "bf16"
    shutil.copytree(tiny_run / "run", bf16_run)
    config_path = Path(RunFolder(bf16_run).config_path)
    config = config_path.read_text()
    assert "precision: float32" in config
    config_path.write_text(config.replace("precision: float32", "precision: mixed_bfloat16"))
    f32 = load_translator(str(tiny_run / "run"))
    bf16 = load_translator(str(bf16_run))
    assert f32.model.compute_dtype == "float32" and bf16.model.compute_dtype == "bfloat16"
    assert load_translator(str(bf16_run), precision="float32").model.compute_dtype == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"  # building did not change the process
    # the same weights: bfloat16 products move the logits by rounding only
    src, tgt = np.array([[5, 9, 14, 3]]), np.array([[2, 7, 11]])
    a, b = (t.model((src, tgt)).numpy() for t in (f32, bf16))
    assert np.abs(a - b).max() < 0.05 * np.abs(a).max() + 0.05
    result = CliRunner().invoke(cli, ["translate", "-", "--model", str(tiny_run / "run"), "--precision",
                                      "mixed_bfloat16"], input="ka rali miba.\nkem dadan mibati.\n")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 2


def test_average_the_checkpoints_of_a_trained_run(tiny_run, tmp_path):
    """The run keeps its last 2 checkpoints (train.keep_checkpoints); a recurrent cell's kernel, which a
    checkpoint holds under the optimizer's variables, is averaged too."""
    import numpy as np
    import tensorflow as tf

    from mt.averaging import checkpoint_paths
    from mt.model import build_model

    run = RunFolder(tiny_run / "run")
    paths = checkpoint_paths(run)
    assert len(paths) == 2
    out = tmp_path / ("averaged" + RunFolder.WEIGHTS_SUFFIX)
    result = CliRunner().invoke(cli, ["average", run.path, "--out", str(out)])
    assert result.exit_code == 0, result.output
    model = build_model(run.load_config().model, *run.vocab_sizes())
    model.load_weights(str(out))
    index = [v.path for v in model.trainable_variables].index("fw_0/kernel")
    key = f"optimizer/_trainable_variables/{index}/.ATTRIBUTES/VARIABLE_VALUE"
    kept = [tf.train.load_checkpoint(p).get_tensor(key) for p in paths]
    assert np.abs(kept[0] - kept[1]).max() > 0
    np.testing.assert_allclose(model.encoder.layers_fw[0].kernel.numpy(), (kept[0] + kept[1]) / 2, rtol=1e-6,
                               atol=1e-7)
    result = CliRunner().invoke(cli, ["translate", "-", "--model", run.path, "--weights", str(out)],
                                input="ka rali miba.\n")
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 1, result.output
    result = CliRunner().invoke(cli, ["average", run.path, "--last", "3", "--out", str(out)])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "keeps 2 checkpoint(s)" in result.output
