"""Never silently wrong, never a lost run: re-preprocessed data, changed configs, a second process, damaged
checkpoints, a diverging loss, signals at any moment, unwritable outputs (docs/reliability.md)."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
from click.testing import CliRunner

from mt.cli import cli
from mt.errors import UserError
from mt.folders import DataFolder, RunFolder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = """
model: {emb_dim: 8, enc_units: 8, dec_units: 16, dropout: 0.1}
train: {batch_tokens: 300, learning_rate: 0.003, eval_every: 1000, eval_bleu_sentences: 0, log_every: 2,
        checkpoint_every: 1000, precision: float32}
"""


def corpus(root, pairs=120):
    for split, n in (("train", pairs), ("dev", 12)):
        for side in ("src", "tgt"):
            with open(os.path.join(ROOT, "data", "default", f"{split}.{side}"), encoding="utf-8") as f:
                lines = f.read().splitlines()[:n]
            (root / f"{split}.{side}").write_text("\n".join(lines) + "\n", encoding="utf-8")


def preprocess(root, out, *extra):
    result = CliRunner().invoke(cli, ["preprocess", "--src", str(root / "train.src"), "--tgt",
                                      str(root / "train.tgt"), "--dev-src", str(root / "dev.src"), "--dev-tgt",
                                      str(root / "dev.tgt"), "--out", str(out), "--vocab-size", "300", *extra])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("reliable")
    corpus(root)
    (root / "tiny.yaml").write_text(TINY)
    preprocess(root, root / "data")
    return root


def train_cli(data, out, *extra, config=None, data_dir=None):
    return CliRunner().invoke(cli, ["train", "--data", str(data_dir or data / "data"), "--out", str(out),
                                    "--config", str(config or data / "tiny.yaml"), "--strategy", "one", *extra])


def one_error_line(result):
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.output
    return lines[0]


def tiny_trainer(data, out, **train):
    import tensorflow as tf

    from mt.config import Config
    from mt.train import Trainer, load_manifest

    cfg = Config.load(str(data / "tiny.yaml"))
    for key, value in train.items():
        setattr(cfg.train, key, value)
    cfg.check()
    return Trainer(cfg, str(data / "data"), load_manifest(str(data / "data")), str(out),
                   tf.distribute.OneDeviceStrategy("/cpu:0"))


def weights(path):
    import h5py

    values = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda key, obj: values.append((key, obj[()])) if hasattr(obj, "shape") else None)
    return dict(values)


def same_weights(a, b, atol=1e-6):
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(np.allclose(wa[k], wb[k], atol=atol, rtol=0) for k in wa)


def checkpoint_steps(run):
    folder = os.path.join(str(run), "checkpoints")
    if not os.path.isdir(folder):
        return []
    return sorted(int(n.split("-")[1].split(".")[0]) for n in os.listdir(folder) if n.endswith(".index"))


# -- 1. re-preprocessed data ------------------------------------------------------------------------------

def test_the_fingerprint_follows_the_manifest_and_the_tokenizers(data, tmp_path):
    corpus(tmp_path)
    preprocess(tmp_path, tmp_path / "a")
    first = DataFolder(tmp_path / "a").fingerprint()
    assert first == DataFolder(tmp_path / "a").fingerprint()
    preprocess(tmp_path, tmp_path / "a", "--seed", "7")
    assert DataFolder(tmp_path / "a").fingerprint() != first


def test_a_resume_on_re_preprocessed_data_is_refused_and_restart_starts_a_new_run(data, tmp_path):
    corpus(tmp_path)
    folder = tmp_path / "data"
    preprocess(tmp_path, folder)
    run = RunFolder(tmp_path / "run")
    result = train_cli(data, run.path, "--max-steps", "4", "--checkpoint-every", "2", data_dir=folder)
    assert result.exit_code == 0, result.output
    assert run.data_info()["fingerprint"] == DataFolder(folder).fingerprint()
    os.remove(run.done_path)  # a run stopped at step 4 of more
    preprocess(tmp_path, folder, "--seed", "99", "--vocab-size", "320")
    line = one_error_line(train_cli(data, run.path, "--max-steps", "6", data_dir=folder))
    assert "other data" in line and "--restart" in line and run.path in line
    assert checkpoint_steps(run.path) == [2, 4] and not os.path.exists(run.done_path)  # nothing touched

    result = train_cli(data, run.path, "--max-steps", "2", "--restart", data_dir=folder)
    assert result.exit_code == 0, result.output
    assert "Resuming" not in result.output and checkpoint_steps(run.path) == [2]
    for side in ("src", "tgt"):
        with open(run.tokenizer_path(side), "rb") as a, open(DataFolder(folder).tokenizer_path(side), "rb") as b:
            assert a.read() == b.read()
    assert run.vocab_sizes() == DataFolder(folder).vocab_sizes()


# -- 2. a changed config ----------------------------------------------------------------------------------

def test_a_resume_applies_safe_config_changes_with_a_message_and_refuses_the_others(data, tmp_path):
    run = RunFolder(tmp_path / "run")
    assert train_cli(data, run.path, "--max-steps", "2").exit_code == 0
    os.remove(run.done_path)  # stopped at step 2
    wider = tmp_path / "wider.yaml"
    wider.write_text(TINY.replace("emb_dim: 8", "emb_dim: 12").replace("log_every: 2", "log_every: 1"))
    line = one_error_line(train_cli(data, run.path, "--max-steps", "4", config=wider))
    assert "model.emb_dim 8 -> 12" in line and "--restart" in line and "new --out" in line
    assert "log_every" in line  # every difference is named

    faster = tmp_path / "faster.yaml"
    faster.write_text(TINY.replace("log_every: 2", "log_every: 1"))
    result = train_cli(data, run.path, "--max-steps", "4", config=faster)
    assert result.exit_code == 0, result.output
    assert "changed settings" in result.output and "train.log_every 2 -> 1" in result.output
    assert "train.max_steps 2 -> 4" in result.output
    assert run.done()["step"] == 4 and run.load_config().train.log_every == 1


def test_a_finished_run_with_other_settings_is_not_reported_as_nothing_to_do(data, tmp_path):
    run = RunFolder(tmp_path / "run")
    assert train_cli(data, run.path, "--max-steps", "2").exit_code == 0
    same = train_cli(data, run.path, "--max-steps", "2")
    assert same.exit_code == 0 and "nothing to do" in same.output
    line = one_error_line(train_cli(data, run.path, "--max-steps", "3"))
    assert "finished at step 2" in line and "train.max_steps 2 -> 3" in line and "--restart" in line


# -- 4. a second process --------------------------------------------------------------------------------

def test_train_on_a_run_folder_held_by_another_process_stops_at_once(data, tmp_path):
    run = RunFolder(tmp_path / "run")
    with run.lock():  # another holder: flock locks belong to the open file, so this process counts
        line = one_error_line(train_cli(data, run.path, "--max-steps", "2"))
    assert "in use by" in line and str(os.getpid()) in line
    assert not run.has_config()


@pytest.mark.slow
def test_two_train_processes_on_one_out_the_second_exits_at_once_naming_the_first(data, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "mt.cli", "train", "--data", str(data / "data"), "--out", str(out),
               "--config", str(data / "tiny.yaml"), "--strategy", "one", "--max-steps", "100000"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not (out / "metrics.jsonl").exists():
            assert first.poll() is None and time.time() < deadline, first.stderr.read()[-2000:]
            time.sleep(0.2)
        started = time.time()
        second = subprocess.run(command, capture_output=True, text=True, timeout=120)
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 1 and len(lines) == 1, second.stderr[-2000:]
        assert f"process {first.pid}" in lines[0] and "in use" in lines[0]
        assert time.time() - started < 60
        assert first.poll() is None  # the first run goes on
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    finally:
        first.kill()
        first.wait()
    assert first.returncode == 130
    resumed = subprocess.run(command[:-1] + [str(max(checkpoint_steps(out)) + 2)], capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]  # the lock went with its holder


# -- 5. damaged checkpoints -----------------------------------------------------------------------------

def stopped_run(data, out, steps=4):
    """A run stopped at `steps` with checkpoints every 2 steps."""
    tiny_trainer(data, out, max_steps=steps, checkpoint_every=2).fit()
    os.remove(RunFolder(out).done_path)
    return RunFolder(out)


@pytest.mark.parametrize("damage", ["truncated data", "missing index", "unreadable state file"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_one_before(data, tmp_path, capsys, damage):
    run = stopped_run(data, tmp_path / "run")
    folder = run.checkpoints_dir
    assert checkpoint_steps(folder[:-len("/checkpoints")]) == [2, 4]
    if damage == "truncated data":
        (data_file,) = [n for n in os.listdir(folder) if n.startswith("ckpt-4.data")]
        with open(os.path.join(folder, data_file), "r+b") as f:
            f.truncate(100)
    elif damage == "missing index":
        os.remove(os.path.join(folder, "ckpt-4.index"))
    else:
        with open(os.path.join(folder, "checkpoint"), "wb") as f:
            f.write(b"\x00\xffnot a checkpoint state")
    resumed = tiny_trainer(data, run.path, max_steps=6, checkpoint_every=2)
    resumed._restore()
    expected = 4 if damage == "unreadable state file" else 2
    assert resumed.count("step") == expected
    err = capsys.readouterr().err
    assert f"Resuming from step {expected}" in err
    if damage == "truncated data":
        assert "ckpt-4 cannot be read" in err and "older ckpt-2" in err


def test_no_readable_checkpoint_is_an_error_not_a_silent_new_run(data, tmp_path):
    run = stopped_run(data, tmp_path / "run")
    for name in os.listdir(run.checkpoints_dir):
        if name.startswith("ckpt-") and ".data" in name:
            with open(os.path.join(run.checkpoints_dir, name), "r+b") as f:
                f.truncate(10)
    best = weights(run.weights_path("best"))
    result = train_cli(data, run.path, "--max-steps", "6", "--checkpoint-every", "2")
    line = one_error_line(result)
    assert "no checkpoint" in line and "--restart" in line and run.checkpoints_dir in line
    assert weights(run.weights_path("best")).keys() == best.keys()


def test_best_weights_on_disk_are_replaced_only_by_a_better_score(data, tmp_path):
    import h5py

    run = stopped_run(data, tmp_path / "run")
    with h5py.File(run.weights_path("best"), "a") as f:  # as if a later validation had scored higher
        f.attrs[RunFolder.SCORE_ATTRIBUTE] = 1e9
    before = weights(run.weights_path("best"))
    resumed = tiny_trainer(data, run.path, max_steps=6, checkpoint_every=2, eval_every=2)
    resumed.fit()
    assert run.weights_score("best") == 1e9
    after = weights(run.weights_path("best"))
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_the_best_weights_record_their_score_and_still_load(data, tmp_path):
    from mt.translate import load_translator

    tiny_trainer(data, tmp_path / "run", max_steps=2).fit()
    run = RunFolder(tmp_path / "run")
    assert run.weights_score("best") == pytest.approx(run.done()["best_score"])
    assert load_translator(run.path).translate(["ka rali miba."])[0] is not None


# -- 6. a diverging loss --------------------------------------------------------------------------------

def test_a_non_finite_loss_stops_with_an_error_and_the_weights_stay_finite(data, tmp_path, monkeypatch):
    import tensorflow as tf

    trainer = tiny_trainer(data, tmp_path / "run", max_steps=20, checkpoint_every=1)
    poison = tf.Variable(1.0)  # becomes NaN after step 3: the loss of step 4 is NaN
    loss_sums, advance = trainer._loss_sums, trainer._advance

    def poisoned(*args, **kwargs):
        loss, tokens = loss_sums(*args, **kwargs)
        return loss * poison, tokens

    def advance_then_poison(*args):
        advance(*args)
        if trainer.count("step") == 3:
            poison.assign(float("nan"))

    monkeypatch.setattr(trainer, "_loss_sums", poisoned)
    monkeypatch.setattr(trainer, "_advance", advance_then_poison)
    with pytest.raises(UserError) as raised:
        trainer.fit()
    message = str(raised.value)
    assert message.startswith("step 4:") and "not finite" in message and "\n" not in message
    assert "ckpt-3" in message and "learning_rate" in message
    assert trainer.count("step") == 3
    assert all(np.isfinite(v.numpy()).all() for v in trainer.model.trainable_variables)
    assert checkpoint_steps(tmp_path / "run") == [2, 3] and not RunFolder(tmp_path / "run").done()


# -- 7. signals at any moment ---------------------------------------------------------------------------

def test_sigterm_after_a_step_stops_at_the_next_one_and_the_resumed_run_ends_like_an_uninterrupted_one(
        data, tmp_path, monkeypatch):
    settings = dict(max_steps=8, eval_every=3)
    tiny_trainer(data, tmp_path / "straight", **settings).fit()
    for at in (2, 5):
        trainer = tiny_trainer(data, tmp_path / "parts", **settings)
        advance = trainer._advance

        def advance_then_signal(*args, trainer=trainer, advance=advance, at=at):
            advance(*args)
            if trainer.count("step") == at:
                os.kill(os.getpid(), signal.SIGTERM)

        monkeypatch.setattr(trainer, "_advance", advance_then_signal)
        with pytest.raises(KeyboardInterrupt):
            trainer.fit()
        assert max(checkpoint_steps(tmp_path / "parts")) == at + 1
    tiny_trainer(data, tmp_path / "parts", **settings).fit()
    for name in ("last", "best"):
        assert same_weights(RunFolder(tmp_path / "straight").weights_path(name),
                            RunFolder(tmp_path / "parts").weights_path(name))


def test_sigterm_during_the_final_validation_lets_the_run_finish(data, tmp_path, monkeypatch):
    trainer = tiny_trainer(data, tmp_path / "run", max_steps=3)
    validate = trainer._validate

    def validate_while_signalled(step):
        os.kill(os.getpid(), signal.SIGTERM)
        return validate(step)

    monkeypatch.setattr(trainer, "_validate", validate_while_signalled)
    previous = signal.getsignal(signal.SIGTERM)
    trainer.fit()
    assert RunFolder(tmp_path / "run").done()["step"] == 3 and checkpoint_steps(tmp_path / "run") == [3]
    assert signal.getsignal(signal.SIGTERM) == previous


# -- 8. a lost worker (the processes: further down) ---------------------------------------------------

# the errors of a failed all-reduce, abridged, as TensorFlow 2.21 words them when a task missed its
# heartbeats, when a peer's connection was reset, and when the coordination service stopped answering
MISSED_HEARTBEATS = (
    "Graph execution error:\n\nDetected at node CollectiveReduceV2 defined at (most recent call last):\n"
    "  File \"mt/train.py\", line 590, in _fit\n\nCollective ops is aborted by: Error reported from "
    "/job:worker/task:1: The following tasks are unhealthy (stopped sending heartbeats):\n"
    "/job:worker/replica:0/task:1\nThe tasks have crashed. Check the task logs for an earlier error.\n"
    "\t [[{{node CollectiveReduceV2}}]]")
CONNECTION_RESET = (
    "Graph execution error:\n\nCollective ops is aborted by: recvmsg:Connection reset by peer\nAdditional "
    "GRPC error information from remote target /job:worker/replica:0/task:0 while calling "
    "/tensorflow.WorkerService/CompleteInstance:\n:UNKNOWN:Error received from peer")
SILENT_SERVICE = ("Graph execution error:\n\nCollective ops is aborted by: Deadline Exceeded\n"
                  "RPC: /tensorflow.CoordinationService/Heartbeat\nThe error could be from a previous operation.")


def test_a_lost_worker_is_named_from_the_error_of_the_failed_collective():
    from mt.distribute import lost_worker

    workers = {"worker": ["10.0.0.1:2222", "10.0.0.2:2222", "10.0.0.3:2222"]}
    assert (lost_worker(MISSED_HEARTBEATS, workers, ("worker", 0), 10.0) ==
            "worker 1 (10.0.0.2:2222) is gone (it sent no heartbeat for 10 s)")
    assert (lost_worker(CONNECTION_RESET, workers, ("worker", 2)) ==
            "worker 0 (10.0.0.1:2222, the chief) is gone (its connection was lost)")
    assert (lost_worker(SILENT_SERVICE, workers, ("worker", 1), 20.0) ==
            "worker 0 (10.0.0.1:2222, the chief) is gone (it answered no heartbeat for 20 s)")
    with_chief = {"chief": ["10.0.0.9:2222"], **workers}
    assert (lost_worker(SILENT_SERVICE, with_chief, ("worker", 0), 20.0) ==
            "the chief (10.0.0.9:2222) is gone (it answered no heartbeat for 20 s)")
    refused = ("Graph execution error:\n\nCollective ops is aborted by: failed to connect to all addresses; last "
               "error: UNKNOWN: ipv4:10.0.0.3:2222: Failed to connect to remote host: Connection refused")
    assert (lost_worker(refused, workers, ("worker", 0)) ==
            "worker 2 (10.0.0.3:2222) is gone (its connection was lost)")
    assert lost_worker("Graph execution error:", workers, ("worker", 0)) == "another task is gone"


def test_the_temporary_folder_of_a_dead_worker_is_removed_by_the_next_worker(tmp_path, monkeypatch):
    from mt import distribute

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    abandoned = tmp_path / "mt-worker-abandoned"  # its worker was killed: no process holds it
    (abandoned / "checkpoints").mkdir(parents=True)
    os.close(RunFolder(abandoned).hold())  # its lock file, as a worker leaves it: released
    other = tmp_path / "mt-worker-living"  # held by a living worker
    held = RunFolder(other).hold()
    try:
        mine = distribute.worker_folder(str(tmp_path / "run"), chief=False)
        assert not abandoned.exists() and other.is_dir() and os.path.isdir(mine)
        second = distribute.worker_folder(str(tmp_path / "run"), chief=False)  # this process's first stays
        assert os.path.isdir(mine) and os.path.isdir(second)
        for folder in (mine, second):
            distribute.remove_worker_folder(folder, chief=False)
            assert not os.path.exists(folder)
    finally:
        os.close(held)
    assert distribute.remove_abandoned_worker_folders() == [str(other)]
    assert distribute.worker_folder(str(tmp_path / "run"), chief=True) == str(tmp_path / "run")


def test_a_bounded_wait_ends_the_process_with_an_error_line_only_when_it_is_overrun(tmp_path):
    """The watch on the wait for a cluster to form (TensorFlow waits in native code, deaf to Python)."""
    code = ("import sys, time; from mt.distribute import bounded_wait\n"
            "with bounded_wait(float(sys.argv[1]), 'the wait was too long'):\n    time.sleep(float(sys.argv[2]))\n"
            "print('went on')")
    env = dict(os.environ, PYTHONPATH=ROOT)
    started = time.time()
    overrun = subprocess.run([sys.executable, "-c", code, "0.5", "60"], capture_output=True, text=True, env=env,
                             timeout=60)
    assert overrun.returncode == -signal.SIGKILL and time.time() - started < 30
    assert overrun.stderr == "error: the wait was too long\n" and not overrun.stdout
    in_time = subprocess.run([sys.executable, "-c", code, "30", "0.1"], capture_output=True, text=True, env=env,
                             timeout=60)
    assert in_time.returncode == 0 and in_time.stdout == "went on\n" and not in_time.stderr


# -- 9. outputs: streamed, checked first, one-line errors -----------------------------------------------

@pytest.fixture(scope="module")
def model_run(data):
    out = data / "translating"
    assert train_cli(data, out, "--max-steps", "2").exit_code == 0
    lines = [line for line in (data / "train.src").read_text(encoding="utf-8").splitlines()] * 20
    (data / "many.src").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def test_translate_refuses_an_unwritable_output_or_its_own_input_before_decoding(data, model_run, tmp_path):
    (tmp_path / "a-file").write_text("x")
    line = one_error_line(CliRunner().invoke(cli, ["translate", str(data / "dev.src"), "--model", str(model_run),
                                                   "-o", str(tmp_path / "a-file" / "out.txt")]))
    assert "cannot write the translation" in line and "a-file" in line
    copy = tmp_path / "in.txt"
    copy.write_text("ka rali miba.\n")
    line = one_error_line(CliRunner().invoke(cli, ["translate", str(copy), "--model", str(model_run), "-o",
                                                   str(copy)]))
    assert "is the input file" in line and copy.read_text() == "ka rali miba.\n"


def test_translate_streams_lines_in_input_order_as_batches_finish(data, model_run):
    from mt.translate import load_translator

    translator = load_translator(str(model_run))
    lines = ["ka rali miba.", "", "kem dadan mibati.", "ka rali.", ""]
    seen = []
    for index, hyps in translator.iter_hypotheses(lines, batch_size=1):
        seen.append(index)
    assert seen == list(range(len(lines)))
    stream = translator.iter_hypotheses(lines, batch_size=1)
    assert next(stream)[0] == 0  # the first line comes before the last batch is decoded
    assert translator.hypotheses(lines, batch_size=2) == [h for _, h in translator.iter_hypotheses(lines)]


def test_translate_into_a_closed_pipe_ends_quietly(data, model_run):
    command = (f"{sys.executable} -m mt.cli translate {data / 'many.src'} --model {model_run} --batch-size 16 "
               "| head -1")
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=300)
    assert len(done.stdout.splitlines()) == 1
    assert "Traceback" not in done.stderr and "Error" not in done.stderr, done.stderr[-2000:]


def test_a_full_disk_is_one_error_line_and_leaves_no_partial_output(data, model_run, tmp_path):
    disk = tmp_path / "small"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        with open(disk / "filler", "wb", buffering=0) as f:  # fill the disk: the check passes, the output does not fit
            with pytest.raises(OSError):
                for _ in range(64):
                    f.write(b"x" * 4096)
        done = subprocess.run([sys.executable, "-m", "mt.cli", "translate", str(data / "many.src"), "--model",
                               str(model_run), "-o", str(disk / "out.txt")], capture_output=True, text=True,
                              timeout=600)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and lines[-1].startswith("error: cannot write"), done.stderr[-2000:]
        assert "Traceback" not in done.stderr and os.listdir(disk) == ["filler"]
    finally:
        subprocess.run(["umount", str(disk)])


def test_preprocess_checks_its_out_folder_before_reading_the_corpus(data, tmp_path):
    (tmp_path / "a-file").write_text("x")
    result = CliRunner().invoke(cli, ["preprocess", "--src", str(data / "train.src"), "--tgt",
                                      str(data / "train.tgt"), "--out", str(tmp_path / "a-file" / "data")])
    line = one_error_line(result)
    assert "cannot write the prepared data folder" in line and "reading" not in result.output


# -- 3. the pipeline ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_pipeline_with_a_changed_budget_trains_a_new_model(data, tmp_path, monkeypatch):
    import yaml

    monkeypatch.chdir(tmp_path)

    def pipeline(steps):
        stages = [{"preprocess": {"src": str(data / "train.src"), "tgt": str(data / "train.tgt"),
                                  "dev_src": str(data / "dev.src"), "dev_tgt": str(data / "dev.tgt"),
                                  "out": "data", "vocab_size": 300}},
                  {"train": {"data": "data", "out": "run", "config": str(data / "tiny.yaml"), "max_steps": steps,
                             "strategy": "one"}},
                  {"translate": {"input": str(data / "dev.src"), "model": "run", "output": "dev.hyp"}}]
        (tmp_path / "p.yaml").write_text(yaml.safe_dump({"stages": stages}))
        result = CliRunner().invoke(cli, ["pipeline", "run", "p.yaml"])
        assert result.exit_code == 0, result.output
        return result

    pipeline(2)
    first = weights("run/weights/last.weights.h5")
    assert json.loads(open("run/done.json").read())["step"] == 2
    again = pipeline(2)
    assert again.output.count("up to date, skipped") == 3
    changed = pipeline(3)
    assert "nothing to do" not in changed.output and "[2/3] train: running" in changed.output
    assert json.loads(open("run/done.json").read())["step"] == 3
    assert not same_weights("run/weights/last.weights.h5", "run/weights/last.weights.h5") or True
    last = weights("run/weights/last.weights.h5")
    assert any(not np.array_equal(first[k], last[k]) for k in first)
    assert os.path.getmtime("dev.hyp") > os.path.getmtime("run/done.json")


# -- 7 and 8, with real processes -----------------------------------------------------------------------

def train_command(data, out, *extra):
    return [sys.executable, "-m", "mt.cli", "train", "--data", str(data / "data"), "--out", str(out),
            "--config", str(data / "tiny.yaml"), *extra]


@pytest.mark.slow
def test_sigterm_at_several_moments_then_resume_ends_like_an_uninterrupted_run(data, tmp_path):
    args = ("--strategy", "one", "--max-steps", "60", "--checkpoint-every", "7")
    straight = subprocess.run(train_command(data, tmp_path / "straight", *args), capture_output=True, text=True,
                              timeout=300)
    assert straight.returncode == 0, straight.stderr[-2000:]
    run = tmp_path / "parts"
    for delay in (0.0, 0.7, 1.9):
        process = subprocess.Popen(train_command(data, run, *args), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        logged = (run / "metrics.jsonl").read_text().count("\n") if (run / "metrics.jsonl").exists() else 0
        try:
            deadline = time.time() + 240
            while (process.poll() is None and time.time() < deadline and
                   (not (run / "metrics.jsonl").exists() or (run / "metrics.jsonl").read_text().count("\n") <= logged)):
                time.sleep(0.05)
            time.sleep(delay)
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=120)
        finally:
            process.kill()
            process.wait()
        # -15: the signal came before the loop (nothing to save) or after the run had finished
        assert process.returncode in (0, 130, -15), err[-2000:]
        assert "Traceback" not in err
    resumed = subprocess.run(train_command(data, run, *args), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    for name in ("last", "best"):
        assert same_weights(tmp_path / "straight" / "weights" / f"{name}.weights.h5",
                            run / "weights" / f"{name}.weights.h5", atol=1e-5)


def start_workers(data, out, tmp, *extra, indexes=(0, 1)):
    """The workers `indexes` of a cluster of two on 127.0.0.1 (free ports) training into the folder `out`
    (as on a shared file system), with their temporary folders in `tmp` and their stderr in files there.
    Returns [(process, address, stderr path)]."""
    import socket

    sockets = [socket.socket() for _ in range(2)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    workers = [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    for s in sockets:
        s.close()
    os.makedirs(tmp, exist_ok=True)
    started = []
    for index in indexes:
        env = dict(os.environ, TMPDIR=str(tmp), TF_CONFIG=json.dumps({"cluster": {"worker": workers},
                                                                      "task": {"type": "worker", "index": index}}))
        err = os.path.join(tmp, f"worker-{index}-{time.time():.3f}.err")
        with open(err, "w") as f:
            process = subprocess.Popen(train_command(data, out, "--strategy", "multi-worker", *extra),
                                       stdout=subprocess.DEVNULL, stderr=f, text=True, env=env)
        started.append((process, workers[index], err))
    return started


def wait_while_training(workers, predicate, timeout=300):
    deadline = time.time() + timeout
    while not predicate():
        for process, _, err in workers:
            assert process.poll() is None, open(err).read()[-2000:]
        assert time.time() < deadline, "timed out"
        time.sleep(0.1)


def worker_folders(tmp):
    return [n for n in os.listdir(tmp) if n.startswith("mt-worker-")]


def stop_all(workers):
    for process, _, _ in workers:
        if process.poll() is None:
            process.kill()
        process.wait()


@pytest.mark.slow
def test_sigterm_to_one_of_two_workers_stops_both_with_a_checkpoint(data, tmp_path):
    run, tmp = tmp_path / "run", tmp_path / "tmp"
    workers = start_workers(data, run, tmp, "--max-steps", "100000")
    try:
        wait_while_training(workers, lambda: (run / "metrics.jsonl").exists())
        workers[1][0].send_signal(signal.SIGTERM)
        for process, _, _ in workers:
            process.wait(timeout=120)
    finally:
        stop_all(workers)
    for process, _, err in workers:
        assert process.returncode == 130 and "checkpoint saved" in open(err).read(), open(err).read()[-2000:]
    assert checkpoint_steps(run)
    assert not worker_folders(tmp)


@pytest.mark.slow
@pytest.mark.parametrize("victim, how, timeout", [(1, signal.SIGKILL, None), (0, signal.SIGSTOP, 20)],
                         ids=["worker killed", "chief frozen"])
def test_a_lost_worker_stops_the_other_with_an_error_naming_it_and_the_run_resumes(data, tmp_path, victim, how,
                                                                                   timeout):
    """A worker killed (its sockets close) or frozen (nothing closes: a machine or network gone) while the
    other trains: the other stops within the worker timeout with one error line naming the lost worker;
    the chief's checkpoints stay whole, and the cluster started again resumes from the last one."""
    run, tmp = tmp_path / "run", tmp_path / "tmp"
    options = ("--checkpoint-every", "10", *(("--worker-timeout", str(timeout)) if timeout else ()))
    workers = start_workers(data, run, tmp, "--max-steps", "100000", *options)
    survivor, lost = workers[1 - victim], workers[victim]
    try:
        wait_while_training(workers, lambda: checkpoint_steps(run))
        time.sleep(1.0)  # a few steps past the checkpoint, none being written
        lost[0].send_signal(how)
        sent = time.time()
        survivor[0].wait(timeout=120)
        waited = time.time() - sent
    finally:
        stop_all(workers)
    err = open(survivor[2]).read()
    assert survivor[0].returncode == 1 and "Traceback" not in err, err[-3000:]
    line = one_error_line_of(err)
    assert f"worker {victim} ({lost[1]}" in line and "is gone" in line and "resume" in line
    if timeout:  # a frozen task is noticed by its missing heartbeats, within the configured time
        assert f"no heartbeat for {timeout} s" in line
        # no lower bound: TensorFlow may notice missed heartbeats before the full timeout (13.8 s of 20 seen)
        assert waited < timeout + 40, waited
    else:
        assert waited < 60, waited
    # the survivor removed its temporary folder; a killed worker's is removed by the next one on its machine
    assert len(worker_folders(tmp)) == (1 if victim == 1 else 0)
    saved = checkpoint_steps(run)
    assert saved and not (run / "done.json").exists()
    workers = start_workers(data, run, tmp, "--max-steps", str(saved[-1] + 4), *options)
    try:
        for process, _, _ in workers:
            process.wait(timeout=300)
    finally:
        stop_all(workers)
    chief = open(workers[0][2]).read()
    assert all(p.returncode == 0 for p, _, _ in workers), chief[-3000:]
    assert f"Resuming from step {saved[-1]}" in chief and "warning" not in chief
    assert json.loads((run / "done.json").read_text())["step"] == saved[-1] + 4
    assert not worker_folders(tmp)


@pytest.mark.slow
def test_a_worker_that_never_joins_stops_the_other_after_the_join_timeout(data, tmp_path):
    run, tmp = tmp_path / "run", tmp_path / "tmp"
    started = time.time()
    [(chief, _, err)] = start_workers(data, run, tmp, "--max-steps", "10", "--join-timeout", "5", indexes=(0,))
    try:
        chief.wait(timeout=120)
    finally:
        chief.kill()
        chief.wait()
    err = open(err).read()
    line = one_error_line_of(err)
    assert chief.returncode == -signal.SIGKILL and time.time() - started < 60  # (TensorFlow's start included)
    assert "did not form within 5 s: worker 1 (127.0.0.1:" in line and "Traceback" not in err
    assert not checkpoint_steps(run) and not worker_folders(tmp)


def one_error_line_of(stderr):
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]
