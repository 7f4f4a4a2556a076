"""Stage 2: train an encoder-decoder on a prepared data folder, writing a self-contained run folder.

Run folder layout:
    config.yaml            the settings used (model + train)
    data.json              vocabulary sizes and the data folder's manifest summary
    src.spm.model, tgt.spm.model   the tokenizers
    weights/best.weights.h5, weights/last.weights.h5
    checkpoints/           weights, optimizer state, step and data position (for resuming)
    metrics.jsonl          one JSON object per log line and per validation
    tb/                    TensorBoard logs
    done.json              written when the run has finished (why, at which step, best scores)

Running the same command again on an unfinished run resumes from its last checkpoint.
"""

import json
import math
import os
import shutil
import time

import click

from mt.atomic import write_json
from mt.errors import UserError


def run(data, out, config, max_steps, max_minutes, seed):
    """`mt train`: create or resume the run folder OUT from the prepared data folder DATA."""
    from mt.config import Config

    manifest = load_manifest(data)
    done = os.path.join(out, "done.json")
    if os.path.exists(done):
        with open(done, encoding="utf-8") as f:
            info = json.load(f)
        click.echo(f"{out}: run already finished at step {info['step']} ({info['reason']}); nothing to do")
        return
    snapshot = os.path.join(out, "config.yaml")
    cfg = Config.load(snapshot if os.path.exists(snapshot) else config)
    for key, value in (("max_steps", max_steps), ("max_minutes", max_minutes), ("seed", seed)):
        if value is not None:
            setattr(cfg.train, key, value)
    cfg.check()
    Trainer(cfg, data, manifest, out).fit()


def load_manifest(data):
    path = os.path.join(data, "manifest.json")
    if not os.path.exists(path):
        raise UserError(f"{data} is not a prepared data folder (no manifest.json): run `mt preprocess` first")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class Trainer:
    """Owns the model, optimizer, data and run folder of one training run."""

    def __init__(self, cfg, data_dir, manifest, out):
        import keras
        import tensorflow as tf

        from mt.data import Batcher
        from mt.model import build_model
        from mt.shards import read_split

        self.cfg, self.tc, self.data_dir, self.out = cfg, cfg.train, data_dir, out
        keras.utils.set_random_seed(self.tc.seed)
        self.src_vocab, self.tgt_vocab = manifest["vocab"]["src"], manifest["vocab"]["tgt"]
        self._prepare_folder(manifest)
        train_src, train_tgt = read_split(data_dir, "train")
        self.batcher = Batcher(train_src, train_tgt, self.tc.batch_tokens, self.tc.max_len, self.tc.seed)
        if self.batcher.num_pairs == 0:
            raise UserError(f"{data_dir}: no training pair is within train.max_len={self.tc.max_len} pieces")
        dev_src, dev_tgt = read_split(data_dir, "dev")
        self.dev = Batcher(dev_src, dev_tgt, self.tc.batch_tokens)
        self.dev_text = self._read_dev_text(manifest)
        self.model = build_model(cfg.model, self.src_vocab, self.tgt_vocab)
        self.optimizer = keras.optimizers.Adam(self.tc.learning_rate)
        self.optimizer.build(self.model.trainable_variables)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.batch_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="batch_in_epoch")
        self.best = tf.Variable(-math.inf, dtype=tf.float64, trainable=False, name="best_score")
        self.bad_evals = tf.Variable(0, dtype=tf.int64, trainable=False, name="bad_evals")
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer, step=self.step,
                                              epoch=self.epoch, batch_in_epoch=self.batch_in_epoch,
                                              best=self.best, bad_evals=self.bad_evals)
        self.manager = tf.train.CheckpointManager(self.checkpoint, os.path.join(out, "checkpoints"), 2)
        spec = [tf.TensorSpec([None, None], tf.int32)] * 3
        self.train_step = tf.function(self._train_step, input_signature=spec)
        self.eval_step = tf.function(self._eval_step, input_signature=spec)
        self.writer = tf.summary.create_file_writer(os.path.join(out, "tb"))

    # -- run folder ------------------------------------------------------------------------------------

    def _prepare_folder(self, manifest):
        os.makedirs(os.path.join(self.out, "weights"), exist_ok=True)
        for side in ("src", "tgt"):
            source = os.path.join(self.data_dir, manifest["tokenizers"][side])
            target = os.path.join(self.out, f"{side}.spm.model")
            if not os.path.exists(target):
                shutil.copyfile(source, target + ".tmp")
                os.replace(target + ".tmp", target)
        self.cfg.save(os.path.join(self.out, "config.yaml"))
        write_json(os.path.join(self.out, "data.json"), {
            "data": os.path.abspath(self.data_dir), "src_vocab": self.src_vocab, "tgt_vocab": self.tgt_vocab,
            "vocab": manifest["vocab"], "pairs": {k: v.get("pairs") for k, v in manifest["splits"].items()}})

    def _read_dev_text(self, manifest):
        names = manifest.get("dev_text")
        if not names or not self.tc.eval_bleu_sentences:
            return None
        sides = []
        for side in ("src", "tgt"):
            with open(os.path.join(self.data_dir, names[side]), encoding="utf-8") as f:
                sides.append(f.read().splitlines()[:self.tc.eval_bleu_sentences])
        return sides

    def _save_weights(self, name):
        path = os.path.join(self.out, "weights", f"{name}.weights.h5")
        tmp = os.path.join(self.out, "weights", f".tmp-{name}.weights.h5")
        self.model.save_weights(tmp)
        os.replace(tmp, path)

    def _log(self, record):
        record = {"time": round(time.time(), 3), **record}
        with open(os.path.join(self.out, "metrics.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        import tensorflow as tf

        with self.writer.as_default(step=int(record["step"])):
            for key, value in record.items():
                if key not in ("time", "step", "kind") and isinstance(value, (int, float)):
                    tf.summary.scalar(f"{record['kind']}/{key}", value)

    # -- compiled steps --------------------------------------------------------------------------------

    def _loss_sums(self, src, tgt_in, tgt_out, training):
        """(sum of token losses, number of real target tokens) for one batch."""
        import tensorflow as tf

        logits = self.model((src, tgt_in), training=training)
        mask = tf.cast(tf.not_equal(tgt_out, 0), tf.float32)
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tgt_out, logits=logits)
        eps = self.tc.label_smoothing if training else 0.0
        if eps:
            uniform = -tf.reduce_mean(tf.nn.log_softmax(logits), axis=-1)
            nll = (1.0 - eps) * nll + eps * uniform
        return tf.reduce_sum(nll * mask), tf.reduce_sum(mask)

    def _train_step(self, src, tgt_in, tgt_out):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss_sum, tokens = self._loss_sums(src, tgt_in, tgt_out, training=True)
            loss = loss_sum / tf.maximum(tokens, 1.0)
        variables = self.model.trainable_variables
        grads = tape.gradient(loss, variables)
        grads, norm = tf.clip_by_global_norm(grads, self.tc.clip_norm)
        self.optimizer.apply(grads, variables)
        return loss_sum, tokens, norm

    def _eval_step(self, src, tgt_in, tgt_out):
        return self._loss_sums(src, tgt_in, tgt_out, training=False)

    # -- the loop --------------------------------------------------------------------------------------

    def fit(self):
        resumed = self.manager.restore_or_initialize()
        if resumed:
            click.echo(f"Resuming from step {int(self.step.numpy())}", err=True)
        click.echo(f"training on {self.batcher.num_pairs} pairs, {self.model.count_params():,} parameters, "
                   f"run folder {self.out}", err=True)
        start, reason = time.time(), "max_epochs"
        self.start_step = int(self.step.numpy())
        window = {"loss": 0.0, "tokens": 0.0, "start": time.time()}
        try:
            for epoch, number, batch in self.batcher.iterate(int(self.epoch.numpy()),
                                                             int(self.batch_in_epoch.numpy()),
                                                             self.tc.max_epochs):
                loss_sum, tokens, _ = self.train_step(*batch)
                self.step.assign_add(1)
                self.epoch.assign(epoch)
                self.batch_in_epoch.assign(number + 1)
                window["loss"] += float(loss_sum)
                window["tokens"] += float(tokens)
                reason = self._after_step(start, window)
                if reason:
                    break
        except KeyboardInterrupt:
            self.manager.save(checkpoint_number=int(self.step.numpy()))
            click.echo(f"\ninterrupted at step {int(self.step.numpy())}: checkpoint saved; run the same "
                       "command again to resume", err=True)
            raise
        self._finish(reason or "max_epochs")

    def _after_step(self, start, window):
        """Log, validate and checkpoint as due; returns a reason to stop, or None."""
        step, tc = int(self.step.numpy()), self.tc
        minutes = (time.time() - start) / 60.0
        if step % tc.log_every == 0:
            self._progress(step, minutes, window)
        stop = None
        if tc.max_steps and step >= tc.max_steps:
            stop = "max_steps"
        elif tc.max_minutes and minutes >= tc.max_minutes:
            stop = "max_minutes"
        if stop:
            return stop
        if step % tc.eval_every == 0 and self._validate(step):
            return "early_stopping"
        if step % tc.checkpoint_every == 0:
            self.manager.save(checkpoint_number=step)
        return None

    def _progress(self, step, minutes, window):
        elapsed = time.time() - window["start"]
        loss = window["loss"] / max(window["tokens"], 1.0)
        speed = window["tokens"] / max(elapsed, 1e-9)
        eta = _eta(step, step - self.start_step, minutes, self.tc)
        epoch = int(self.epoch.numpy()) + int(self.batch_in_epoch.numpy()) / max(1, self._epoch_batches())
        click.echo(f"step {step:>7} | epoch {epoch:6.2f} | loss {loss:6.3f} | ppl {math.exp(min(loss, 50)):8.2f}"
                   f" | {speed:7.0f} tgt tok/s | {minutes:6.1f} min{eta}", err=True)
        self._log({"kind": "train", "step": step, "epoch": round(epoch, 4), "loss": loss,
                   "tokens_per_s": speed, "minutes": minutes})
        window.update(loss=0.0, tokens=0.0, start=time.time())

    def _epoch_batches(self):
        if not hasattr(self, "_n_batches"):
            self._n_batches = len(self.batcher.epoch_batches(0))
        return self._n_batches

    def _validate(self, step):
        """Dev loss (and BLEU on a dev sample); keep the best weights; True when it is time to stop early."""
        record = {"kind": "dev", "step": step, **self._dev_scores()}
        score = record.get("bleu", -record["loss"])
        improved = score > float(self.best.numpy())
        if improved:
            self.best.assign(score)
            self.bad_evals.assign(0)
            self._save_weights("best")
        else:
            self.bad_evals.assign_add(1)
        record["best"] = improved
        self._log(record)
        bleu = f" | dev BLEU {record['bleu']:5.2f}" if "bleu" in record else ""
        click.echo(f"validation at step {step}: dev loss {record['loss']:.3f}{bleu}"
                   f"{' (best so far)' if improved else ''}", err=True)
        patience = self.tc.patience
        return bool(patience) and int(self.bad_evals.numpy()) >= patience

    def _dev_scores(self):
        loss_sum = tokens = 0.0
        for indices in self.dev.sorted_batches():
            batch_loss, batch_tokens = self.eval_step(*self.dev.make_batch(indices))
            loss_sum, tokens = loss_sum + float(batch_loss), tokens + float(batch_tokens)
        scores = {"loss": loss_sum / max(tokens, 1.0)}
        if self.dev_text:
            scores["bleu"] = self._dev_bleu()
        return scores

    def _dev_bleu(self):
        from mt.evaluate import score
        from mt.tokenizer import Tokenizer
        from mt.translate import Translator

        if not hasattr(self, "_translator"):
            self._translator = Translator(self.model, Tokenizer(os.path.join(self.out, "src.spm.model")),
                                          Tokenizer(os.path.join(self.out, "tgt.spm.model")))
        src, ref = self.dev_text
        hyp = self._translator.translate(src)
        return score(hyp, ref)["bleu"]

    def _finish(self, reason):
        step = int(self.step.numpy())
        if reason != "early_stopping":
            self._validate(step)
        self.manager.save(checkpoint_number=step)
        self._save_weights("last")
        write_json(os.path.join(self.out, "done.json"), {
            "step": step, "reason": reason, "best_score": float(self.best.numpy()),
            "epoch": int(self.epoch.numpy())})
        click.echo(f"finished at step {step} ({reason}); weights in {os.path.join(self.out, 'weights')}",
                   err=True)


def _eta(step, steps_done, minutes, tc):
    """Time left under the step and minute limits, as ' | ETA m:ss' (empty without limits)."""
    remaining = []
    if tc.max_steps:
        remaining.append((tc.max_steps - step) * minutes / max(steps_done, 1))
    if tc.max_minutes:
        remaining.append(tc.max_minutes - minutes)
    if not remaining:
        return ""
    left = max(0.0, min(remaining))
    return f" | ETA {int(left)}:{int((left % 1) * 60):02d}"

