"""`mt lm train`: a character language model trained on one long stream by truncated backpropagation
through time, into a run folder (mt/folders.py: LMRunFolder).

The training text is cut into train.batch_size parallel streams (mt/lm/streams.py). Every update reads
the next train.bptt characters of each stream starting from the state the previous update left (the
carried state, a value: no gradient flows into the chunk before), backpropagates through the window of
train.bptt_backward characters, clips the gradients by their global norm and applies Adam. The update,
the stream position and the carried state change together inside one compiled step, so a signal never
falls between them, and all three are saved in every checkpoint: a resumed run reads on from the same
column of every stream with the same state, and ends with the weights of an uninterrupted one.

Runs share with `mt train` what mt/resume.py holds (the settings a resume may change, checkpoints found
from their files with a fallback past a damaged one, a checkpoint that signals cannot cut short), the run
folder's lock, validation with best weights and early stopping (mt/validation.py) and the run log
(mt/runlog.py: progress lines, metrics.jsonl, TensorBoard). It trains on one device.
"""

import hashlib
import json
import math
import os

import click

from mt import schedule
from mt.errors import UserError
from mt.folders import LMRunFolder
from mt.lm.config import LMConfig
from mt.resume import RESTART_HINT, Stop, Stoppable, config_to_resume, configured, drop_damaged_state_file
from mt.resume import restore_newest
from mt.runlog import Clock, RunLog
from mt.validation import Validator

# settings a resumed run may change: they bound or pace the run, and leave the model, its texts and the
# order in which they are read as they were
SAFE_CHANGES = ("train.max_steps", "train.max_minutes", "train.max_epochs", "train.eval_every",
                "train.checkpoint_every", "train.log_every", "train.patience")


def run(text, out, config=None, dev_text=(), max_steps=None, max_minutes=None, seed=None, checkpoint_every=None,
        restart=False):
    """`mt lm train`: create or resume the run folder OUT from the text files TEXT (and DEV_TEXT)."""
    from mt.lm.streams import read_texts

    folder = LMRunFolder(out)
    overrides = {"max_steps": max_steps, "max_minutes": max_minutes, "seed": seed,
                 "checkpoint_every": checkpoint_every}
    texts = read_texts(text)
    dev = read_texts(dev_text, "--dev-text") if dev_text else None
    with folder.lock():
        if restart and folder.has_config():
            folder.clear()
            click.echo(f"{out}: --restart: the earlier run's checkpoints, weights and metrics were removed",
                       err=True)
        cfg = resumed_config(folder, fingerprint(texts, dev), config, overrides)
        if cfg is None:
            return
        LMTrainer(cfg, texts, dev, folder).fit()


def fingerprint(texts, dev):
    """A hash of the training and dev texts' bytes: what a run depends on."""
    files = {"text": [f["sha256"] for f in texts.files], "dev": [f["sha256"] for f in dev.files] if dev else None}
    return hashlib.sha256(json.dumps(files).encode()).hexdigest()


def resumed_config(folder, prints, config, overrides):
    """The config to train with (see mt/train.py, resumed_config): a resumed run must go on with the texts
    (fingerprint `prints`) and the settings it started with, but for SAFE_CHANGES."""
    if not folder.has_config():
        if folder.is_run() or os.path.exists(folder.checkpoints_dir):
            raise UserError(f"{folder.path} holds a run without its config: {RESTART_HINT}")
        return configured(LMConfig, config, overrides)
    info = folder.data_info()
    if info.get("fingerprint") != prints:
        raise UserError(f"{folder.path} was trained on other text than --text and --dev-text hold now: "
                        f"{RESTART_HINT}")
    return config_to_resume(folder, LMConfig, config, overrides, SAFE_CHANGES)


class StreamValidator(Validator):
    """Validation on the dev text: its mean loss per character, read as parallel streams."""

    def __init__(self, model, rows, chunk, *args, **kwargs):
        from mt.lm.evaluate import RowScorer

        super().__init__(model, None, None, *args, **kwargs)
        self.rows, self.scorer = rows, RowScorer(model, chunk)

    def dev_loss(self):
        nats, count = self.scorer(*self.rows)
        return nats / max(count, 1.0)


class LMTrainer(Stoppable):
    """The training loop of one language model run: model, optimizer, streams, carried state, checkpoints."""

    def __init__(self, cfg, texts, dev, folder):
        """`texts`, `dev`: the training and dev Text (mt/lm/streams.py; dev None: held out from the end of
        the training text, train.dev_fraction); `folder`: the LMRunFolder."""
        import keras

        self.cfg, self.tc, self.run = cfg, cfg.train, folder
        keras.utils.set_random_seed(self.tc.seed)
        keras.mixed_precision.set_global_policy(self.tc.precision)
        self.log = RunLog(folder, unit="chars", speed_key="chars_per_s", bits=True)
        self._prepare(texts, dev)
        self._build_state()

    # -- texts and run folder --------------------------------------------------------------------------

    def _prepare(self, texts, dev):
        """Split the texts, fix the vocabulary (a resumed run keeps its own), encode, and write the run
        folder's records."""
        from mt.lm.streams import TrainStreams, eval_rows, hold_out_end
        from mt.lm.vocab import Vocabulary

        train_text, dev_text = (texts.text, dev.text) if dev else hold_out_end(texts.text, self.tc.dev_fraction)
        run, model_cfg = self.run, self.cfg.model
        if run.has_config() and run.is_lm():
            self.vocab = Vocabulary.from_record(run.read_vocab(), run.vocab_path)
        else:
            self.vocab = Vocabulary.build(model_cfg.vocab, train_text, model_cfg.min_count)
            run.write_vocab(self.vocab.record())
        self.train_ids = self.vocab.encode(train_text)
        tc = self.tc
        self.streams = TrainStreams(self.train_ids, tc.batch_size, tc.bptt, tc.backward)
        dev_ids = self.vocab.encode(dev_text) if len(dev_text) > 1 else None
        self.dev_rows = eval_rows(dev_ids, tc.batch_size, tc.eval_chunk)[:2] if dev_ids is not None else None
        run.save_config(self.cfg)
        run.write_data_info({
            "kind": LMRunFolder.KIND, "fingerprint": fingerprint(texts, dev), "texts": texts.files,
            "dev_texts": dev.files if dev else None, "dev": "files" if dev else f"the last {tc.dev_fraction:g} of the text",
            "vocab": self.vocab.size, "vocab_kind": self.vocab.kind, "train_chars": len(train_text),
            "dev_chars": len(dev_text), "unknown_dev_chars": self.vocab.unknown(dev_ids) if dev_ids is not None else 0})

    def _build_state(self):
        import keras
        import tensorflow as tf

        from mt.lm.model import build_model

        tc = self.tc
        self.model = build_model(self.cfg.model, self.vocab)
        self.optimizer = keras.optimizers.Adam(tc.learning_rate)
        self.optimizer.build(self.model.trainable_variables)
        count = {name: tf.Variable(0, dtype=tf.int64, trainable=False, name=name)
                 for name in ("step", "epoch", "chunk", "bad_evals")}
        self.step, self.epoch, self.chunk, self.bad_evals = (count[n] for n in ("step", "epoch", "chunk", "bad_evals"))
        self.best = tf.Variable(-math.inf, dtype=tf.float64, trainable=False, name="best_score")
        self.train_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="train_seconds")
        # the state carried from one update to the next, per layer and state part, [batch, units]
        self.carried = tuple(tuple(tf.Variable(s, trainable=False, name=f"carried_{i}_{j}") for j, s in enumerate(state))
                             for i, state in enumerate(self.model.zero_state(tc.batch_size)))
        self.schedule = schedule.resolve(tc.schedule, tc.max_steps, tc.max_minutes)
        rng = [v.value for v in self.model.non_trainable_variables]  # dropout seed states
        self.checkpoint = tf.train.Checkpoint(
            model=self.model, optimizer=self.optimizer, rng=rng, step=self.step, epoch=self.epoch, chunk=self.chunk,
            bad_evals=self.bad_evals, best=self.best, train_seconds=self.train_seconds,
            carried=[v for state in self.carried for v in state])
        drop_damaged_state_file(self.run, self.log.say)
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.run.checkpoints_dir, tc.keep_checkpoints)
        self.validator = None
        if self.dev_rows is not None:
            self.validator = StreamValidator(self.model, self.dev_rows, tc.eval_chunk, self.best, self.bad_evals,
                                             tc.patience, weights=self.run)
        window = tf.TensorSpec([tc.batch_size, self.streams.window], tf.int32)
        self.train_step = tf.function(self._train_step, autograph=False,
                                      input_signature=[window, window, tf.TensorSpec([], tf.float32)])

    def count(self, name):
        return int(getattr(self, name).numpy())

    # -- the compiled step -----------------------------------------------------------------------------

    def window_loss(self, inputs, targets, state, training=True):
        """(mean loss over the window's last train.bptt predictions, the state to carry) of one window
        read from `state`."""
        import tensorflow as tf

        cuts, detach, keep = self.streams.cuts()
        outputs, carried = self.model.run(inputs, state, training=training, cuts=cuts, detach=detach, keep=keep)
        counted = self.streams.window - self.tc.bptt
        logits = self.model.logits(outputs[:, counted:])
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets[:, counted:], logits=logits)
        return tf.reduce_mean(nll), carried

    def gradients(self, inputs, targets):
        """(loss, dense gradients of the trainable variables, the state to carry) of one window from the
        carried state."""
        import tensorflow as tf

        state = tuple(tuple(tf.identity(v) for v in layer) for layer in self.carried)  # values: no gradient
        with tf.GradientTape() as tape:
            loss, carried = self.window_loss(inputs, targets, state)
        grads = tape.gradient(loss, self.model.trainable_variables)
        # embedding gradients come as IndexedSlices, whose repeated rows would make the global norm wrong
        return loss, [tf.convert_to_tensor(g) for g in grads], carried

    def _train_step(self, inputs, targets, rate):
        """One update at learning rate `rate`, the stream position and the carried state moved with it
        (nothing moves when the loss or the gradient norm is not finite); returns (loss sum, predictions,
        gradient norm before clipping, finite?)."""
        import tensorflow as tf

        loss, grads, carried = self.gradients(inputs, targets)
        grads, norm = tf.clip_by_global_norm(grads, self.tc.clip_norm)
        finite = tf.logical_and(tf.math.is_finite(loss), tf.math.is_finite(norm))
        self.optimizer.learning_rate.assign(rate)
        def apply():
            self.optimizer.apply(grads, self.model.trainable_variables)

        tf.cond(finite, apply, lambda: None)
        following = self.chunk + 1
        wraps = following >= self.streams.chunks  # the epoch ends: the streams start again from zeros
        moved = tf.cast(finite, tf.int64)
        self.step.assign_add(moved)
        self.epoch.assign_add(moved * tf.cast(wraps, tf.int64))
        self.chunk.assign(tf.where(finite, tf.where(wraps, tf.zeros_like(following), following), self.chunk))
        for layer, new in zip(self.carried, carried):
            for variable, value in zip(layer, new):
                value = tf.where(wraps, tf.zeros_like(value), value)
                variable.assign(tf.where(finite, value, variable))
        predictions = float(self.tc.batch_size * self.tc.bptt)
        return loss * predictions, tf.constant(predictions), norm, finite

    # -- checkpoints -----------------------------------------------------------------------------------

    def _save_checkpoint(self):
        self.train_seconds.assign(self._train_seconds())
        self.manager.save(checkpoint_number=self.count("step"))

    def _restore(self):
        import tensorflow as tf

        from mt.data import unigram_log_probs

        required = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer)
        if restore_newest(self.run, required, self.checkpoint, self.log.say):
            self.log.say(f"Resuming from step {self.count('step')} (epoch {self.count('epoch')}, column "
                         f"{self.count('chunk') * self.tc.bptt:,} of every stream)")
        else:
            # the output bias starts at the log unigram frequencies: the first updates need not learn them
            bias = self.model.output_layer.bias
            bias.assign(unigram_log_probs([self.train_ids], self.vocab.size).astype(bias.dtype))
        self.validator_floor()
        self.seconds_before = float(self.train_seconds.numpy())

    def validator_floor(self):
        """Best weights on disk may score higher than the restored counters say (a fallback to an older
        checkpoint): only a better score replaces them."""
        if self.validator is not None:
            self.validator.floor = self.run.weights_score("best")

    def _train_seconds(self):
        return self.seconds_before + self.clock.seconds()

    def _rate(self, step):
        tc = self.tc
        fraction = schedule.progress(step - 1, self._train_seconds(), tc.max_steps, tc.max_minutes)
        return schedule.learning_rate(self.schedule, tc.learning_rate, step, fraction, tc.warmup_steps, tc.final_lr)

    # -- the loop --------------------------------------------------------------------------------------

    def fit(self):
        import tensorflow as tf

        self._restore()
        s = self.streams
        self.log.say(f"training on {len(self.train_ids):,} characters ({self.vocab.kind} vocabulary of "
                     f"{self.vocab.size} ids) as {s.batch} streams of {s.length:,}, {s.chunks:,} updates an epoch, "
                     f"{self.model.count_params():,} parameters, {self.tc.precision}, run folder {self.run.path}")
        self.clock = Clock.started(self.count("step"))
        tc = self.tc
        reason = self._limit_reached()
        with self.stop_requests():
            try:
                while reason is None:
                    inputs, targets = s.window_at(self.count("chunk"))
                    rate = self._rate(self.count("step") + 1)
                    loss_sum, predictions, norm, finite = self.train_step(inputs, targets, tf.constant(rate, tf.float32))
                    if not bool(finite):
                        self._diverged(float(loss_sum) / float(predictions), float(norm), rate)
                    self.clock.add(float(loss_sum), float(predictions), float(norm), rate)
                    time_up = bool(tc.max_minutes) and self._train_seconds() >= 60.0 * tc.max_minutes
                    reason = "max_minutes" if time_up else self._after_step()
                    if reason is None and self.stop_requested:
                        raise Stop()
            except (KeyboardInterrupt, Stop):
                self.interrupted()
            self._finish(reason)

    def _limit_reached(self):
        tc = self.tc
        if tc.max_steps and self.count("step") >= tc.max_steps:
            return "max_steps"
        if tc.max_epochs and self.count("epoch") >= tc.max_epochs:
            return "max_epochs"
        return None

    def _after_step(self):
        """Log, validate and checkpoint as due; returns a reason to stop, or None."""
        step, tc = self.count("step"), self.tc
        if step % tc.log_every == 0:
            epoch = self.count("epoch") + self.count("chunk") / self.streams.chunks
            self.log.progress(step, epoch, self.clock, tc.max_steps, tc.max_minutes)
        reason = self._limit_reached()
        if reason:
            return reason
        if step % tc.eval_every == 0 and self._validate(step):
            return "early_stopping"
        if step % tc.checkpoint_every == 0:
            self._save_checkpoint()
        return None

    def _validate(self, step):
        """Validate on the dev text and log it; True when it is time to stop early."""
        if self.validator is None:
            return False
        validation = self.validator(step)
        bits = validation.loss / math.log(2.0)
        self.log.record({**validation.record(), "bpc": bits})
        self.log.say(f"validation at step {step}: dev {bits:.4f} bits per character (loss {validation.loss:.4f})"
                     f"{' (best so far)' if validation.improved else ''}")
        return validation.stop

    def _diverged(self, loss, norm, rate):
        self.log.flush()
        latest = self.manager.latest_checkpoint
        kept = f"the last checkpoint, {os.path.basename(latest)}, is kept" if latest else "no checkpoint was written"
        raise UserError(f"step {self.count('step') + 1}: the loss ({loss:g}) or the gradient norm ({norm:g}) is not "
                        f"finite at learning rate {rate:g}; the update was not applied and training stopped "
                        f"({kept}): lower train.learning_rate (now {self.tc.learning_rate:g}) or "
                        f"train.clip_norm (now {self.tc.clip_norm:g}), then resume or run with --restart")

    def _finish(self, reason):
        step, seconds = self.count("step"), self._train_seconds()  # the training time, the final validation left out
        if reason != "early_stopping":
            self._save_checkpoint()  # the steps since the last checkpoint survive a kill during validation
            self._validate(step)
        self._save_checkpoint()
        self.run.save_weights(self.model, "last")
        self.run.write_done({"step": step, "reason": reason, "best_score": float(self.best.numpy()),
                             "epoch": self.count("epoch"), "train_seconds": round(seconds, 3)})
        self.log.flush()
        self.log.say(f"finished at step {step} ({reason}); weights in {self.run.weights_dir}")
