"""Training without a distribution strategy where none is needed: early stopping as a pure function, the
validator's best weights, dev BLEU, the run log, the run folder's tokenizers, and a resumed loop."""

import json
import os
import re

import numpy as np
import pytest
from click.testing import CliRunner

from mt.errors import UserError
from mt.folders import DataFolder, RunFolder
from mt.runlog import Clock, RunLog, eta, progress_line
from mt.validation import DevBleu, Validation, Validator, dev_loss, early_stopping, read_dev_sample

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = """
model: {emb_dim: 8, enc_units: 8, dec_units: 16, dropout: 0.1}
train: {batch_tokens: 300, learning_rate: 0.003, eval_every: 1000, eval_bleu_sentences: 0, log_every: 2,
        checkpoint_every: 1000, precision: float32}
"""


def run_scores(scores, patience):
    """The verdicts of validations scoring `scores` one after the other, from a new run's state."""
    best, bad, verdicts = -float("inf"), 0, []
    for score in scores:
        verdict = early_stopping(best, bad, score, patience)
        best, bad = verdict.best, verdict.bad_evals
        verdicts.append(verdict)
    return verdicts


# -- early stopping -----------------------------------------------------------------------------------

def test_improving_scores_keep_training_and_reset_the_count():
    verdicts = run_scores([1.0, 0.5, 2.0, 3.0], patience=2)
    assert [v.improved for v in verdicts] == [True, False, True, True]
    assert [v.bad_evals for v in verdicts] == [0, 1, 0, 0]
    assert [v.best for v in verdicts] == [1.0, 1.0, 2.0, 3.0]
    assert not any(v.stop for v in verdicts)


def test_a_plateau_stops_after_patience_validations_without_improvement():
    verdicts = run_scores([-2.0, -1.0, -1.0, -1.5, -1.0], patience=3)
    assert [v.stop for v in verdicts] == [False, False, False, False, True]
    assert verdicts[-1].bad_evals == 3 and verdicts[-1].best == -1.0  # equal is not better


def test_patience_0_never_stops():
    verdicts = run_scores([1.0] + [0.0] * 50, patience=0)
    assert not any(v.stop for v in verdicts) and verdicts[-1].bad_evals == 50


# -- the validator --------------------------------------------------------------------------------------

class Pieces:
    """Stands in for a SentencePiece tokenizer: a text is its piece ids separated by spaces."""

    def encode(self, lines):
        return [[int(w) for w in line.split()] for line in lines]

    def decode(self, seqs):
        return [" ".join(str(i) for i in seq) for seq in seqs]


VOCAB = 12


@pytest.fixture(scope="module")
def model():
    import keras

    from mt.config import ModelConfig
    from mt.model import build_model

    keras.utils.set_random_seed(1)
    m = build_model(ModelConfig(emb_dim=8, enc_units=8, dec_units=16, dropout=0.0), VOCAB, VOCAB)
    m((np.ones((1, 3), np.int32), np.ones((1, 4), np.int32)))  # build
    return m


@pytest.fixture
def dev():
    from mt.data import Batcher

    rng = np.random.default_rng(0)
    seqs = [rng.integers(4, VOCAB, n).astype(np.int32) for n in (3, 5, 4, 6, 2)]
    return Batcher(seqs, seqs, batch_tokens=12)


class Losses:
    """An eval step whose mean dev loss is the next of `losses`, whatever the batch."""

    def __init__(self, losses):
        self.losses, self.calls = list(losses), 0

    def __call__(self, src, tgt_in, tgt_out):
        tokens = float((tgt_out != 0).sum())
        return self.losses[self.calls // 1000] * tokens, tokens

    def next(self):
        self.calls += 1000


def test_dev_loss_is_the_mean_over_all_real_target_tokens(dev):
    sums = []

    def eval_step(src, tgt_in, tgt_out):
        tokens = float((tgt_out != 0).sum())
        sums.append(tokens)
        return 2.0 * tokens * len(sums), tokens  # batch i has mean loss 2 i

    loss = dev_loss(eval_step, dev)
    assert len(sums) > 1
    assert loss == pytest.approx(sum(2.0 * t * (i + 1) for i, t in enumerate(sums)) / sum(sums))


def test_the_best_weights_are_saved_only_when_the_score_improves(model, dev, tmp_path):
    import tensorflow as tf

    run = RunFolder(tmp_path / "run")
    best, bad = tf.Variable(-np.inf, dtype=tf.float64), tf.Variable(0, dtype=tf.int64)
    losses = Losses([3.0, 3.5, 2.0])
    validate = Validator(model, losses, dev, best, bad, patience=5, weights=run)
    kernel = model.trainable_variables[0]
    original = kernel.numpy()

    def saved_kernels():
        return [v for v in weights(run.weights_path("best")).values() if v.shape == original.shape]

    try:
        first = validate(10)
        assert first == Validation(10, pytest.approx(3.0), None, True, False)
        assert float(best.numpy()) == pytest.approx(-3.0)
        assert any(np.array_equal(v, original) for v in saved_kernels())

        kernel.assign(original + 1.0)
        losses.next()
        second = validate(20)
        assert not second.improved and int(bad.numpy()) == 1 and float(best.numpy()) == pytest.approx(-3.0)
        assert not any(np.array_equal(v, original + 1.0) for v in saved_kernels())

        losses.next()
        third = validate(30)
        assert third.improved and int(bad.numpy()) == 0 and float(best.numpy()) == pytest.approx(-2.0)
        assert any(np.array_equal(v, original + 1.0) for v in saved_kernels())
        assert sorted(os.listdir(run.weights_dir)) == ["best.weights.h5"]  # no temporary file left
    finally:
        kernel.assign(original)


def test_a_task_without_a_run_folder_validates_but_saves_nothing(model, dev, tmp_path):
    import tensorflow as tf

    best, bad = tf.Variable(-np.inf, dtype=tf.float64), tf.Variable(0, dtype=tf.int64)
    result = Validator(model, Losses([1.0]), dev, best, bad, patience=1)(5)
    assert result.improved and float(best.numpy()) == pytest.approx(-1.0)
    assert not os.listdir(tmp_path)


def test_dev_bleu_is_the_bleu_of_the_greedy_translations(model):
    from mt.evaluate import score
    from mt.translate import Translator

    sources = ["4 5 6", "7 8", "9 10 11 4"]
    translations = Translator(model, Pieces(), Pieces()).translate(sources)
    references = ["4 5 6 7", "7 8", "9 10"]
    bleu = DevBleu(model, Pieces(), Pieces(), sources, references)
    assert isinstance(bleu(), float)
    assert bleu() == score(translations, references)["bleu"]
    assert DevBleu(model, Pieces(), Pieces(), sources, translations)() == pytest.approx(100.0)


def test_a_validation_with_bleu_scores_bleu(model, dev):
    import tensorflow as tf

    best, bad = tf.Variable(50.0, dtype=tf.float64), tf.Variable(0, dtype=tf.int64)
    result = Validator(model, Losses([0.1]), dev, best, bad, patience=1, bleu=lambda: 40.0)(7)
    assert result.bleu == 40.0 and not result.improved and result.stop  # a lower loss does not count
    assert result.record() == {"kind": "dev", "step": 7, "loss": pytest.approx(0.1), "bleu": 40.0, "best": False}


# -- the run log ----------------------------------------------------------------------------------------

def test_the_progress_line_has_step_epoch_loss_perplexity_speed_minutes_and_eta():
    line = progress_line(120, 1.5, 2.0, 1234.4, 3.25, eta(120, 100, 3.25, 200, 0))
    assert re.fullmatch(r"step +120 \| epoch +1\.50 \| loss +2\.000 \| ppl +7\.39 \| +1234 tgt tok/s \| "
                        r"+3\.2 min \| ETA 2:36", line), line
    assert eta(5, 5, 1.0, 0, 0) == "" and eta(5, 5, 1.0, 0, 3) == " | ETA 2:00"


def test_the_clock_window_starts_again_at_each_progress_line():
    clock = Clock.started(40, now=100.0)
    clock.add(6.0, 3.0, 0.5, 1e-3)
    clock.add(2.0, 1.0, 1.5, 2e-3)
    assert clock.close_window(now=102.0) == (2.0, 2.0, 1.0)
    assert (clock.loss_sum, clock.tokens, clock.norm_sum, clock.steps, clock.window_start) == (0.0, 0.0, 0.0, 0, 102.0)
    assert clock.rate == 2e-3
    assert clock.minutes(now=130.0) == 0.5 and clock.start_step == 40


def test_the_run_log_writes_one_metrics_line_per_record_and_tensorboard_events(tmp_path):
    run = RunFolder(tmp_path)
    lines = []
    log = RunLog(run, echo=lines.append)
    clock = Clock.started(0)
    clock.add(10.0, 5.0)
    log.progress(2, 0.25, clock, max_steps=10)
    log.validation(Validation(2, 1.5, 12.0, True, False))
    log.flush()
    records = [json.loads(line) for line in open(run.metrics_path, encoding="utf-8")]
    assert [r["kind"] for r in records] == ["train", "dev"]
    assert set(records[0]) == {"time", "kind", "step", "epoch", "loss", "tokens_per_s", "minutes", "lr", "grad_norm"}
    assert records[0]["loss"] == 2.0 and records[0]["step"] == 2 and records[0]["epoch"] == 0.25
    assert records[1] == {"time": records[1]["time"], "kind": "dev", "step": 2, "loss": 1.5, "bleu": 12.0,
                          "best": True}
    assert any(name.startswith("events") for name in os.listdir(run.tensorboard_dir))
    assert lines[0].startswith("step       2 |") and " | ETA " in lines[0]
    assert lines[1] == "validation at step 2: dev loss 1.500 | dev BLEU 12.00 (best so far)"


def test_a_run_log_without_a_folder_prints_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines = []
    log = RunLog(None, echo=lines.append)
    log.progress(5, 1.0, Clock.started(0), 0, 0)
    log.validation(Validation(5, 2.0, None, False, False))
    log.flush()
    assert len(lines) == 2 and lines[1] == "validation at step 5: dev loss 2.000"
    assert not os.listdir(tmp_path)


# -- the run folder and the loop ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from mt.cli import cli

    root = tmp_path_factory.mktemp("train")
    for split, n in (("train", 120), ("dev", 12)):
        for side in ("src", "tgt"):
            with open(os.path.join(ROOT, "data", "default", f"{split}.{side}"), encoding="utf-8") as f:
                lines = f.read().splitlines()[:n]
            (root / f"{split}.{side}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "tiny.yaml").write_text(TINY)
    result = CliRunner().invoke(cli, ["preprocess", "--src", str(root / "train.src"), "--tgt",
                                      str(root / "train.tgt"), "--dev-src", str(root / "dev.src"), "--dev-tgt",
                                      str(root / "dev.tgt"), "--out", str(root / "data"), "--vocab-size", "300"])
    assert result.exit_code == 0, result.output
    return root


def test_the_dev_sample_is_the_first_lines_of_the_dev_text(data):
    folder = DataFolder(data / "data")
    sources, references = read_dev_sample(folder, 5)
    assert len(sources) == len(references) == 5
    with open(folder.dev_text_path("tgt"), encoding="utf-8") as f:
        assert references == f.read().split("\n")[:5]
    assert read_dev_sample(folder, 0) is None


def test_a_new_run_copies_the_tokenizers_and_a_resumed_one_keeps_its_copies(data, tmp_path):
    from mt.config import Config
    from mt.train import prepare_run_folder

    folder = DataFolder(data / "data")
    run = RunFolder(tmp_path / "run")
    os.makedirs(run.path)
    with open(run.tokenizer_path("src"), "wb") as f:
        f.write(b"stale")
    cfg = Config.load(str(data / "tiny.yaml"))
    prepare_run_folder(run, folder, folder.manifest(), cfg)  # a new run: no config snapshot yet
    for side in ("src", "tgt"):
        with open(run.tokenizer_path(side), "rb") as a, open(folder.tokenizer_path(side), "rb") as b:
            assert a.read() == b.read()
    assert run.vocab_sizes() == folder.vocab_sizes() and run.has_config()

    with open(run.tokenizer_path("src"), "wb") as f:
        f.write(b"kept")
    os.remove(run.tokenizer_path("tgt"))
    prepare_run_folder(run, folder, folder.manifest(), cfg)  # resumed: it has a config snapshot
    with open(run.tokenizer_path("src"), "rb") as f:
        assert f.read() == b"kept"
    assert os.path.exists(run.tokenizer_path("tgt"))


def test_an_interrupted_loop_resumes_from_its_checkpoint(data, tmp_path, monkeypatch, capsys):
    """(That the resumed run ends with the weights of an uninterrupted one: tests/test_distributed.py.)"""
    import tensorflow as tf

    from mt.config import Config
    from mt.train import Trainer, load_manifest

    def trainer(max_steps):
        cfg = Config.load(str(data / "tiny.yaml"))
        cfg.train.max_steps = max_steps
        return Trainer(cfg, str(data / "data"), load_manifest(str(data / "data")), str(tmp_path / "run"),
                       tf.distribute.OneDeviceStrategy("/cpu:0"))

    interrupted = trainer(6)
    interrupt_at(interrupted, 3, monkeypatch)
    run = RunFolder(tmp_path / "run")
    assert run.done() is None
    position = [interrupted.count(n) for n in ("step", "epoch", "batch_in_epoch")]
    saved = [v.numpy() for v in interrupted.model.trainable_variables]
    capsys.readouterr()

    resumed = trainer(6)
    resumed._restore()
    assert [resumed.count(n) for n in ("step", "epoch", "batch_in_epoch")] == position == [3, 0, 3]
    for a, b in zip(saved, resumed.model.trainable_variables):
        np.testing.assert_array_equal(a, b.numpy())
    resumed.fit()
    assert "Resuming from step 3" in capsys.readouterr().err
    assert run.done()["step"] == 6 and run.done()["reason"] == "max_steps"
    steps = [json.loads(line)["step"] for line in open(run.metrics_path, encoding="utf-8")]
    assert steps == [2, 4, 6, 6]  # progress lines every 2 steps (one run, then the other), the final validation


def interrupt_at(trainer, step, monkeypatch):
    """Run the trainer's loop until it has done `step` updates, then Ctrl-C it (its checkpoint saved)."""
    advance = trainer._advance

    def advance_then_interrupt(*args):
        advance(*args)
        if trainer.count("step") == step:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "_advance", advance_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()


def weights(path):
    import h5py

    values = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda key, obj: values.append((key, obj[()])) if hasattr(obj, "shape") else None)
    return dict(values)


def tiny_trainer(data, out, model=None, **train):
    import tensorflow as tf

    from mt.config import Config
    from mt.train import Trainer, load_manifest

    cfg = Config.load(str(data / "tiny.yaml"))
    for key, value in (model or {}).items():
        setattr(cfg.model, key, value)
    for key, value in train.items():
        setattr(cfg.train, key, value)
    cfg.check()
    return Trainer(cfg, str(data / "data"), load_manifest(str(data / "data")), str(out),
                   tf.distribute.OneDeviceStrategy("/cpu:0"))


def logged_rates(run):
    return {r["step"]: r["lr"] for r in map(json.loads, open(run.metrics_path, encoding="utf-8"))
            if r["kind"] == "train"}


def test_a_schedule_planned_to_steps_gives_a_resumed_run_the_rates_of_an_uninterrupted_one(data, tmp_path,
                                                                                            monkeypatch):
    settings = dict(max_steps=8, schedule="linear", warmup_steps=2, final_lr=0.0)
    whole = tiny_trainer(data, tmp_path / "whole", **settings)
    whole.fit()
    expected = logged_rates(RunFolder(tmp_path / "whole"))
    assert expected[2] == pytest.approx(whole.tc.learning_rate * 7 / 8, rel=1e-6)  # warmed up, 1/8 down
    assert expected[8] == pytest.approx(whole.tc.learning_rate * 1 / 8, rel=1e-6)

    interrupted = tiny_trainer(data, tmp_path / "parts", **settings)
    interrupt_at(interrupted, 3, monkeypatch)
    tiny_trainer(data, tmp_path / "parts", **settings).fit()
    assert logged_rates(RunFolder(tmp_path / "parts")) == pytest.approx(expected, rel=1e-6)


def test_a_schedule_planned_to_minutes_continues_from_the_training_time_the_checkpoint_records(data, tmp_path):
    settings = dict(max_minutes=10.0, schedule="linear", warmup_steps=0, final_lr=0.0)
    first = tiny_trainer(data, tmp_path / "run", **settings)
    first._restore()
    first.clock = Clock.started(0, now=0.0)
    first.seconds_before = 150.0 - first.clock.seconds()  # the run has trained for 150 s so far
    first._save_checkpoint()
    resumed = tiny_trainer(data, tmp_path / "run", **settings)
    resumed._restore()
    resumed.clock = Clock.started(0)
    assert resumed.seconds_before == pytest.approx(150.0, abs=1.0)
    # a quarter of the 10 minutes spent: a linear schedule is a quarter of the way down, and the budget
    # counts the time before the resume too
    assert resumed._rate(1) == pytest.approx(resumed.tc.learning_rate * 0.75, rel=0.01)
    assert not resumed._time_is_up()
    resumed.seconds_before = 600.0
    assert resumed._time_is_up()


def test_the_moving_average_follows_the_weights_and_validation_uses_it(data, tmp_path):
    trainer = tiny_trainer(data, tmp_path / "run", max_steps=6, ema_decay=0.5, eval_every=6)
    trainer.fit()
    raw = [v.numpy() for v in trainer.model.trainable_variables]
    average = [s.numpy() for s in trainer.average.shadows]
    assert any(not np.allclose(a, r) for a, r in zip(average, raw))  # the average lags the weights
    with trainer.average.swapped():
        assert all(np.array_equal(v.numpy(), a) for v, a in zip(trainer.model.trainable_variables, average))
    assert all(np.array_equal(v.numpy(), r) for v, r in zip(trainer.model.trainable_variables, raw))
    run = RunFolder(tmp_path / "run")
    saved = weights(run.weights_path("last"))
    # the last weights hold the average: every saved array is one of the averaged arrays
    assert all(any(value.shape == a.shape and np.array_equal(value, a) for a in average)
               for value in saved.values() if value.dtype.kind == "f" and value.size > 1)


def test_the_moving_average_starts_fast_and_settles_at_its_decay():
    import tensorflow as tf

    from mt.averaging import MovingAverage

    weight = tf.Variable([0.0])
    average = MovingAverage([weight], 0.9)
    weight.assign([10.0])
    average.update()  # decay min(0.9, 2/11)
    assert average.shadows[0].numpy()[0] == pytest.approx(10.0 * 9 / 11)
    for _ in range(200):
        average.update()
    assert average.shadows[0].numpy()[0] == pytest.approx(10.0, rel=1e-6)
    weight.assign([20.0])
    average.update()  # settled: decay 0.9
    assert average.shadows[0].numpy()[0] == pytest.approx(11.0, rel=1e-5)


def test_a_checkpoint_of_another_model_is_refused_not_half_restored(data, tmp_path):
    import tensorflow as tf

    from mt.config import Config
    from mt.train import Trainer, load_manifest

    tiny_trainer(data, tmp_path / "run", max_steps=2).fit()
    cfg = Config.load(str(data / "tiny.yaml"))
    cfg.model.dec_layers = 2  # a decoder layer the checkpoint has no weights for
    other = Trainer(cfg, str(data / "data"), load_manifest(str(data / "data")), str(tmp_path / "run"),
                    tf.distribute.OneDeviceStrategy("/cpu:0"))
    with pytest.raises(UserError, match="does not hold this model's weights"):
        other._restore()


def test_accumulating_two_batches_makes_the_update_of_one_batch_holding_both(data, tmp_path):
    import tensorflow as tf

    from mt.data import pad_batch

    def trainer(out, accumulate):
        import keras

        t = tiny_trainer(data, tmp_path / out, model={"dropout": 0.0}, max_steps=10, accumulate=accumulate,
                         warmup_steps=0, schedule="constant")
        t._restore()
        # plain gradient descent: the update is the gradient itself, so a wrong sum or scale shows (Adam's
        # first update is nearly the gradient's sign, whatever its scale)
        t.optimizer = keras.optimizers.SGD(1.0)
        t.optimizer.build(t.model.trainable_variables)
        return t

    one, two = trainer("one", 1), trainer("two", 2)
    for a, b in zip(one.model.weights, two.model.weights):
        b.assign(a)  # the same starting point
    start = [v.numpy() for v in one.model.trainable_variables]
    batcher = one.batcher
    first, second = batcher.epoch_batches(0)[:2]

    def batch(indices):
        src, tgt_in, tgt_out = pad_batch([batcher.src[i] for i in indices], [batcher.tgt[i] for i in indices])
        tokens = float(sum(batcher.tgt_len[i] for i in indices))
        return tuple(tf.constant(x) for x in (src, tgt_in, tgt_out)) + (tf.constant(tokens),)

    go_on, position = tf.constant([0.0, 0.0]), (tf.constant(1e-3), tf.constant(0, tf.int64), tf.constant(1, tf.int64))
    one._train_step(batch(list(first) + list(second)), go_on, *position)
    tokens = sum(float(two._accumulate_step(batch(indices))) for indices in (first, second))
    two._apply_step(tf.constant(tokens), go_on, *position)
    assert one.count("step") == two.count("step") == 1
    for a, b, before in zip(one.model.trainable_variables, two.model.trainable_variables, start):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)
    assert any(not np.allclose(a.numpy(), before) for a, before in zip(one.model.trainable_variables, start))
    assert all(not np.any(t.numpy()) for t in two.accumulated)  # the sums start again at zero


ACCUMULATE_ON_REPLICAS = """
import sys
import keras
import numpy as np
import tensorflow as tf
from mt.config import Config
from mt.data import shard_batch
from mt.distribute import make_strategy
from mt.train import Trainer, load_manifest

data, out = sys.argv[1], sys.argv[2]

def trainer(name, accumulate):
    cfg = Config.load(data + "/../tiny.yaml")
    cfg.model.dropout, cfg.train.max_steps, cfg.train.accumulate = 0.0, 10, accumulate
    cfg.train.schedule, cfg.train.warmup_steps = "constant", 0
    t = Trainer(cfg, data, load_manifest(data), out + "/" + name, strategy)
    t._restore()
    with strategy.scope():  # plain gradient descent: the update is the gradient itself
        t.optimizer = keras.optimizers.SGD(1.0)
        t.optimizer.build(t.model.trainable_variables)
    return t

strategy = make_strategy("mirrored", 2, "float32")
assert strategy.num_replicas_in_sync == 2
one, two = trainer("one", 1), trainer("two", 2)
for a, b in zip(one.model.weights, two.model.weights):
    b.assign(a)
first, second = one.batcher.epoch_batches(0)[:2]

def distributed(indices):
    shards, tokens = shard_batch(one.batcher, np.asarray(indices), 2)
    values = [tuple(tf.constant(x) for x in shard) + (tf.constant(tokens),) for shard in shards]
    parts = [strategy.experimental_distribute_values_from_function(lambda ctx, k=k: values[ctx.replica_id_in_sync_group][k])
             for k in range(4)]
    return tuple(parts)

go_on, position = tf.constant([0.0, 0.0]), (tf.constant(1e-3), tf.constant(0, tf.int64), tf.constant(1, tf.int64))
tf.function(one._train_step, autograph=False)(distributed(list(first) + list(second)), go_on, *position)
accumulate = tf.function(two._accumulate_step, autograph=False)
tokens = sum(float(accumulate(distributed(list(b)))) for b in (first, second))
tf.function(two._apply_step, autograph=False)(tf.constant(tokens), go_on, *position)
for a, b in zip(one.model.trainable_variables, two.model.trainable_variables):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)
print("same update")
"""


@pytest.mark.slow
def test_accumulating_makes_the_same_update_on_two_cpu_replicas(data, tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", ACCUMULATE_ON_REPLICAS, str(data / "data"), str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "same update" in done.stdout, done.stderr[-3000:]


@pytest.mark.slow
def test_a_model_continued_on_new_data_starts_with_a_lower_dev_loss_than_a_fresh_one(data, tmp_path):
    """Fine-tuning: a model trained on one half of a corpus, continued on the other half (encoded with its
    tokenizers), starts there with a lower dev loss than a fresh model."""
    from mt.cli import cli
    from mt.validation import dev_loss

    lines = {side: open(os.path.join(ROOT, "data", "default", f"train.{side}"), encoding="utf-8").read().splitlines()
             for side in ("src", "tgt")}
    for half, part in (("a", slice(0, 300)), ("b", slice(300, 600))):
        for side in ("src", "tgt"):
            (tmp_path / f"{half}.{side}").write_text("\n".join(lines[side][part]) + "\n", encoding="utf-8")
    runner = CliRunner()
    common = ["--dev-src", str(data / "dev.src"), "--dev-tgt", str(data / "dev.tgt")]
    assert runner.invoke(cli, ["preprocess", "--src", str(tmp_path / "a.src"), "--tgt", str(tmp_path / "a.tgt"),
                               *common, "--out", str(tmp_path / "A"), "--vocab-size", "300"]).exit_code == 0
    result = runner.invoke(cli, ["preprocess", "--src", str(tmp_path / "b.src"), "--tgt", str(tmp_path / "b.tgt"),
                                 *common, "--out", str(tmp_path / "B"), "--tokenizers-from", str(tmp_path / "A")])
    assert result.exit_code == 0, result.output
    (tmp_path / "fast.yaml").write_text(TINY.replace("learning_rate: 0.003", "learning_rate: 0.02"))
    result = runner.invoke(cli, ["train", "--data", str(tmp_path / "A"), "--out", str(tmp_path / "runA"),
                                 "--config", str(tmp_path / "fast.yaml"), "--max-steps", "120"])
    assert result.exit_code == 0, result.output

    import tensorflow as tf

    from mt.config import Config
    from mt.train import Trainer, init_config, load_manifest

    def first_dev_loss(out, init):
        cfg, weights = (init_config(RunFolder(tmp_path / "runA"), DataFolder(tmp_path / "B"), None, "last")
                        if init else (Config.load(str(data / "tiny.yaml")), None))
        trainer = Trainer(cfg, str(tmp_path / "B"), load_manifest(str(tmp_path / "B")), str(tmp_path / out),
                          tf.distribute.OneDeviceStrategy("/cpu:0"), init_weights=weights)
        trainer._restore()
        return dev_loss(trainer.eval_step, trainer.dev), trainer

    continued, trainer = first_dev_loss("continued", True)
    fresh, _ = first_dev_loss("fresh", False)
    assert continued < fresh - 0.2, (continued, fresh)
    assert trainer.count("step") == 0  # a new run: its own step count and optimizer
    assert int(trainer.optimizer.iterations.numpy()) == 0


def test_init_from_a_run_of_other_vocabularies_is_a_one_line_error(data, tmp_path):
    from mt.cli import cli

    runner = CliRunner()
    assert runner.invoke(cli, ["train", "--data", str(data / "data"), "--out", str(tmp_path / "run"), "--config",
                               str(data / "tiny.yaml"), "--max-steps", "2"]).exit_code == 0
    result = runner.invoke(cli, ["preprocess", "--src", str(data / "train.src"), "--tgt", str(data / "train.tgt"),
                                 "--out", str(tmp_path / "other"), "--vocab-size", "320", "--dev-size", "5"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["train", "--data", str(tmp_path / "other"), "--out", str(tmp_path / "new"),
                                 "--init-from", str(tmp_path / "run")])
    assert result.exit_code == 1
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: --init-from") and "--tokenizers-from" in message, message
