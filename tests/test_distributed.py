"""Data-parallel training and resuming, on CPU: logical CPU replicas, a 2-worker cluster on 127.0.0.1, kills."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from mt.cli import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = """
model: {emb_dim: 16, enc_units: 16, dec_units: 32, dropout: 0.0}
train: {batch_tokens: 300, learning_rate: 0.003, eval_every: 1000, eval_bleu_sentences: 0, log_every: 5,
        checkpoint_every: 1000, precision: float32}
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    for side in ("src", "tgt"):
        with open(os.path.join(ROOT, "data", "default", f"train.{side}"), encoding="utf-8") as f:
            lines = f.read().splitlines()[:300]
        (root / f"train.{side}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "tiny.yaml").write_text(TINY)
    result = CliRunner().invoke(cli, ["preprocess", "--src", str(root / "train.src"), "--tgt",
                                      str(root / "train.tgt"), "--out", str(root / "data"), "--vocab-size", "300"])
    assert result.exit_code == 0, result.output
    return root


def mt_command(root, out, *extra):
    return [sys.executable, "-m", "mt.cli", "train", "--data", str(root / "data"), "--out", str(out),
            "--config", str(root / "tiny.yaml"), *extra]


def train(root, out, *extra, env=None, check=True):
    done = subprocess.run(mt_command(root, out, *extra), capture_output=True, text=True, timeout=300,
                          env=env)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def weights(run, name="last"):
    import h5py

    values = []
    with h5py.File(run / "weights" / f"{name}.weights.h5", "r") as f:
        f.visititems(lambda key, obj: values.append((key, obj[()])) if hasattr(obj, "shape") else None)
    return dict(values)


def assert_same_weights(a, b, atol):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and wa
    worst = max(float(np.max(np.abs(wa[k] - wb[k]))) for k in wa)
    assert worst < atol, worst


@pytest.mark.slow
def test_two_cpu_replicas_compute_the_same_update_as_one(data):
    train(data, data / "one", "--strategy", "one", "--max-steps", "4")
    train(data, data / "two", "--cpu-replicas", "2", "--max-steps", "4")
    assert_same_weights(data / "one", data / "two", atol=2e-5)
    # and the weights did move: a run of other steps differs
    train(data, data / "other", "--strategy", "one", "--max-steps", "2")
    with pytest.raises(AssertionError):
        assert_same_weights(data / "one", data / "other", atol=2e-5)


def test_the_loss_of_the_gathered_real_positions_is_the_masked_loss_of_all(data, tmp_path):
    import tensorflow as tf

    from mt.config import Config
    from mt.train import Trainer, load_manifest

    cfg = Config.load(str(data / "tiny.yaml"))
    cfg.train.label_smoothing = 0.1
    trainer = Trainer(cfg, str(data / "data"), load_manifest(str(data / "data")), str(tmp_path / "run"),
                      tf.distribute.OneDeviceStrategy("/cpu:0"))
    src, tgt_in, tgt_out = trainer.batcher.make_batch(trainer.batcher.epoch_batches(0)[0])
    real = tgt_out != 0
    assert not real.all() and real.sum() % 64  # padding, and a count the gathered rows must be padded to
    for training, eps in ((False, 0.0), (True, 0.1)):  # the tiny config has no dropout
        loss, tokens = trainer._loss_sums(src, tgt_in, tgt_out, training)
        logits = trainer.model((src, tgt_in), training=training)
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tgt_out, logits=logits)
        nll = (1.0 - eps) * nll - eps * tf.reduce_mean(tf.nn.log_softmax(logits), axis=-1)
        assert float(tokens) == real.sum()
        np.testing.assert_allclose(float(loss), float(tf.reduce_sum(tf.where(real, nll, 0.0))), rtol=1e-5)


def wait_for(predicate, timeout, process):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        assert process.poll() is None, process.stderr.read()[-3000:]
        time.sleep(0.2)
    raise AssertionError("timed out")


def checkpoint_steps(run):
    folder = run / "checkpoints"
    if not folder.exists():
        return []
    return sorted(int(n.split("-")[1].split(".")[0]) for n in os.listdir(folder) if n.endswith(".index"))


@pytest.mark.slow
def test_a_killed_run_resumes_and_ends_like_an_uninterrupted_one(data):
    run = data / "killed"
    (data / "dropout.yaml").write_text(TINY.replace("dropout: 0.0", "dropout: 0.2"))
    args = ("--strategy", "one", "--max-steps", "40", "--checkpoint-every", "10", "--config",
            str(data / "dropout.yaml"))
    process = subprocess.Popen(mt_command(data, run, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        wait_for(lambda: any(s >= 10 for s in checkpoint_steps(run)), 240, process)
        time.sleep(0.3)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    saved = max(checkpoint_steps(run))
    assert saved < 40 and not (run / "done.json").exists()
    resumed = train(data, run, *args)
    assert f"Resuming from step {saved}" in resumed.stderr
    assert json.loads((run / "done.json").read_text())["step"] == 40
    train(data, data / "straight", *args)
    assert_same_weights(run, data / "straight", atol=1e-5)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_before_exiting(data):
    run = data / "terminated"
    process = subprocess.Popen(mt_command(data, run, "--strategy", "one", "--max-steps", "100000"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (run / "metrics.jsonl").exists(), 240, process)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err[-2000:]
    assert "checkpoint saved" in err and checkpoint_steps(run)


def test_a_second_signal_does_not_cut_the_interrupted_runs_checkpoint_short(data, tmp_path, monkeypatch):
    """Ctrl-C (here: at the second step), then SIGTERM while the checkpoint is being written: the checkpoint
    is written all the same and the run ends as interrupted, not with a traceback from inside the save."""
    import tensorflow as tf

    from mt.config import Config
    from mt.train import Trainer, load_manifest

    trainer = Trainer(Config.load(str(data / "tiny.yaml")), str(data / "data"), load_manifest(str(data / "data")),
                      str(tmp_path / "run"), tf.distribute.OneDeviceStrategy("/cpu:0"))
    advance, save = trainer._advance, trainer._save_checkpoint

    def advance_then_interrupt(*args):
        advance(*args)
        if trainer.count("step") == 2:
            raise KeyboardInterrupt

    def save_while_signalled():
        os.kill(os.getpid(), signal.SIGTERM)
        save()

    monkeypatch.setattr(trainer, "_advance", advance_then_interrupt)
    monkeypatch.setattr(trainer, "_save_checkpoint", save_while_signalled)
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert checkpoint_steps(tmp_path / "run") == [2]
    assert signal.getsignal(signal.SIGTERM) == previous


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_on_loopback_train_together_and_the_chief_run_translates(data, tmp_path):
    workers = [f"127.0.0.1:{p}" for p in free_ports(2)]
    outs = [tmp_path / "chief-run", tmp_path / "worker-run"]
    processes = []
    try:
        for index in range(2):
            env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": {"worker": workers},
                                                         "task": {"type": "worker", "index": index}}))
            processes.append(subprocess.Popen(
                mt_command(data, outs[index], "--strategy", "multi-worker", "--max-steps", "6"),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
        results = [p.communicate(timeout=300) for p in processes]
    finally:
        for p in processes:
            p.kill()
            p.wait()
    for p, (_, err) in zip(processes, results):
        assert p.returncode == 0, err[-3000:]
    assert "2 replica(s)" in results[0][1]
    assert json.loads((outs[0] / "done.json").read_text())["step"] == 6
    assert not outs[1].exists() or not any(outs[1].iterdir())  # only the chief writes a run folder
    (tmp_path / "in.txt").write_text("ka rali miba.\n\nkem dadan mibati.\n")
    result = CliRunner().invoke(cli, ["translate", str(tmp_path / "in.txt"), "--model", str(outs[0])])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.split("\n")) == 4


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains_with_finite_losses(data, precision):
    run = data / precision
    train(data, run, "--strategy", "one", "--max-steps", "10", "--precision", precision)
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert losses and all(np.isfinite(losses))
    assert "mixed" in (run / "config.yaml").read_text()
    assert all(v.dtype == np.float32 for v in weights(run).values())  # variables stay float32


@pytest.mark.parametrize("flags, expected", [("fpu avx2 avx512f avx512_bf16", "mixed_bfloat16"),
                                             ("fpu avx2 amx_bf16 amx_tile", "mixed_bfloat16"),
                                             ("fpu sse4_2 avx2 fma", "float32"), (None, "float32")])
def test_auto_precision_uses_bfloat16_only_where_the_cpu_has_it(tmp_path, flags, expected):
    from mt.distribute import resolve_precision

    cpuinfo = tmp_path / "cpuinfo"
    if flags is not None:  # (None: no such file, e.g. not Linux)
        cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\n"
                           f"processor\t: 1\nflags\t\t: {flags}\n")
    assert resolve_precision("auto", str(cpuinfo)) == expected
    assert resolve_precision("float32", str(cpuinfo)) == "float32"
    assert resolve_precision("mixed_float16", str(cpuinfo)) == "mixed_float16"


@pytest.mark.slow
def test_auto_precision_is_resolved_in_the_run_snapshot(data):
    from mt.config import Config
    from mt.distribute import resolve_precision

    run = data / "auto"
    done = train(data, run, "--strategy", "one", "--max-steps", "2", "--precision", "auto")
    used = Config.load(str(run / "config.yaml")).train.precision
    assert used == resolve_precision("auto") and used in done.stderr


@pytest.mark.slow
def test_a_new_run_starts_the_output_bias_at_log_unigram_frequencies(data):
    from mt.data import unigram_log_probs
    from mt.folders import DataFolder

    train(data, data / "bias", "--strategy", "one", "--max-steps", "1")
    _, tgt = DataFolder(data / "data").read_split("train")
    with open(data / "data" / "manifest.json", encoding="utf-8") as f:
        expected = unigram_log_probs(tgt, json.load(f)["vocab"]["tgt"])
    (bias,) = [v for v in weights(data / "bias").values() if v.shape == expected.shape]
    # one Adam step moves each entry by at most about the learning rate (0.003)
    assert np.max(np.abs(bias - expected)) < 0.004
