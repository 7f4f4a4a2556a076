"""Stage 2: train an encoder-decoder on a prepared data folder, writing a self-contained run folder.

Run folder layout:
    config.yaml            the settings used (model + train)
    data.json              vocabulary sizes and the data folder's manifest summary
    src.spm.model, tgt.spm.model   the tokenizers
    weights/best.weights.h5, weights/last.weights.h5
    checkpoints/           weights, optimizer state, step, data position, RNG state (for resuming)
    metrics.jsonl          one JSON object per log line and per validation
    tb/                    TensorBoard logs
    done.json              written when the run has finished (why, at which step, best score)

Running the same command again on an unfinished run resumes from its last checkpoint; Ctrl-C and SIGTERM
save a checkpoint first. Training runs under a tf.distribute strategy (see mt/distribute.py) with a custom
step: each replica computes the gradient of (its sum of token losses / real target tokens in the global
batch), the gradients are summed across replicas, clipped by their global norm, and applied once, so one
replica and N replicas compute the same update for the same global batch.
"""

import json
import math
import os
import shutil
import signal
import time

import click

from mt.atomic import write_json
from mt.errors import UserError

OUTPUT_ROWS_MULTIPLE = 64  # the loss's gathered target positions are padded to a multiple of this


def run(data, out, config, max_steps, max_minutes, seed, strategy="auto", cpu_replicas=0, precision=None,
        checkpoint_every=None):
    """`mt train`: create or resume the run folder OUT from the prepared data folder DATA."""
    from mt.config import Config
    from mt.distribute import make_strategy, resolve_precision

    manifest = load_manifest(data)
    done = os.path.join(out, "done.json")
    if os.path.exists(done):
        with open(done, encoding="utf-8") as f:
            info = json.load(f)
        click.echo(f"{out}: run already finished at step {info['step']} ({info['reason']}); nothing to do")
        return
    snapshot = os.path.join(out, "config.yaml")
    cfg = Config.load(snapshot if os.path.exists(snapshot) else config)
    overrides = {"max_steps": max_steps, "max_minutes": max_minutes, "seed": seed, "precision": precision,
                 "checkpoint_every": checkpoint_every}
    for key, value in overrides.items():
        if value is not None:
            setattr(cfg.train, key, value)
    cfg.check()
    cfg.train.precision = resolve_precision(cfg.train.precision)  # the snapshot records what was used
    Trainer(cfg, data, manifest, out, make_strategy(strategy, cpu_replicas, cfg.train.precision)).fit()


def load_manifest(data):
    path = os.path.join(data, "manifest.json")
    if not os.path.exists(path):
        raise UserError(f"{data} is not a prepared data folder (no manifest.json): run `mt preprocess` first")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class Stop(Exception):
    """Raised by the SIGTERM handler: save a checkpoint and exit, like Ctrl-C."""


class Trainer:
    """Owns the strategy, model, optimizer, data and run folder of one training run."""

    def __init__(self, cfg, data_dir, manifest, out, strategy):
        import keras

        from mt.distribute import is_chief, worker_folder

        self.cfg, self.tc, self.data_dir, self.out, self.strategy = cfg, cfg.train, data_dir, out, strategy
        self.chief = is_chief(strategy)
        self.folder = worker_folder(out, self.chief)  # the chief writes the run folder, others a temp folder
        keras.utils.set_random_seed(self.tc.seed)
        self.src_vocab, self.tgt_vocab = manifest["vocab"]["src"], manifest["vocab"]["tgt"]
        self.tokenizer_names = manifest["tokenizers"]
        if self.chief:
            self._prepare_folder(manifest)
        self._load_data(manifest)
        self._build_state()

    def _load_data(self, manifest):
        from mt.data import Batcher
        from mt.folders import DataFolder

        train_src, train_tgt = DataFolder(self.data_dir).read_split("train")
        self.batcher = Batcher(train_src, train_tgt, self.tc.batch_tokens, self.tc.max_len, self.tc.seed,
                               multiple=self.tc.length_multiple)
        if self.batcher.num_pairs == 0:
            raise UserError(f"{self.data_dir}: no training pair is within train.max_len={self.tc.max_len} "
                            "pieces; raise max_len in the config")
        dev_src, dev_tgt = DataFolder(self.data_dir).read_split("dev")
        self.dev = Batcher(dev_src, dev_tgt, self.tc.batch_tokens, multiple=self.tc.length_multiple)
        self.dev_text = self._read_dev_text(manifest)

    def _build_state(self):
        import keras
        import tensorflow as tf

        from mt.model import build_model

        with self.strategy.scope():
            self.model = build_model(self.cfg.model, self.src_vocab, self.tgt_vocab)
            optimizer = keras.optimizers.Adam(self.tc.learning_rate)
            self.loss_scaling = self.tc.precision == "mixed_float16"  # bfloat16 needs no loss scaling
            if self.loss_scaling:
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            self.optimizer = optimizer
            self.optimizer.build(self.model.trainable_variables)
            counters = ("step", "epoch", "batch_in_epoch", "bad_evals")
            self.counters = {n: tf.Variable(0, dtype=tf.int64, trainable=False, name=n) for n in counters}
            self.best = tf.Variable(-math.inf, dtype=tf.float64, trainable=False, name="best_score")
        rng = [v.value for v in self.model.non_trainable_variables]  # dropout seed states
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer, best=self.best,
                                              rng=rng, **self.counters)
        self.manager = tf.train.CheckpointManager(self.checkpoint, os.path.join(self.folder, "checkpoints"), 2)
        spec = [tf.TensorSpec([None, None], tf.int32)] * 3
        self.eval_step = tf.function(self._eval_step, input_signature=spec, autograph=False)
        self.writer = tf.summary.create_file_writer(os.path.join(self.folder, "tb"))

    def count(self, name):
        return int(self.counters[name].numpy())

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
        if not self.chief:
            return
        path = os.path.join(self.out, "weights", f"{name}.weights.h5")
        tmp = os.path.join(self.out, "weights", f".tmp-{name}.weights.h5")
        self.model.save_weights(tmp)
        os.replace(tmp, path)

    def _save_checkpoint(self):
        """Every task saves (multi-worker saving is collective); only the chief's lands in the run folder."""
        self.manager.save(checkpoint_number=self.count("step"))

    def _restore(self):
        import tensorflow as tf

        latest = tf.train.latest_checkpoint(os.path.join(self.out, "checkpoints"))
        if latest:
            self.checkpoint.restore(latest)
            click.echo(f"Resuming from step {self.count('step')}", err=True)
        else:
            self._init_output_bias()

    def _init_output_bias(self):
        """Start the output layer's bias at the log unigram frequencies of the training targets.

        With a zero bias, the fastest way for the first updates to lower the loss is to drive the decoder's
        output (after the attention layer's tanh) to one constant vector that encodes the unigram
        distribution; on a real corpus with an 8k vocabulary that saturates the tanh, its gradient
        vanishes, and training stays at the unigram loss (measured on the Bible corpus: loss 6.17 after
        200 steps with this init missing, 4.36 with it). Every worker computes the same values."""
        from mt.data import unigram_log_probs

        bias = self.model.output_layer.bias
        bias.assign(unigram_log_probs(self.batcher.tgt, self.tgt_vocab).astype(bias.dtype))

    def _log(self, record):
        if not self.chief:
            return
        import tensorflow as tf

        record = {"time": round(time.time(), 3), **record}
        with open(os.path.join(self.out, "metrics.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        with self.writer.as_default(step=int(record["step"])):
            for key, value in record.items():
                if key not in ("time", "step", "kind") and isinstance(value, (int, float)):
                    tf.summary.scalar(f"{record['kind']}/{key}", value)

    # -- distributed input -----------------------------------------------------------------------------

    def _distributed_dataset(self, start_epoch, start_batch):
        """Per-replica shards of each global batch, from a position on (distribute_datasets_from_function)."""
        import tensorflow as tf

        from mt.data import shard_batch

        replicas = self.strategy.num_replicas_in_sync

        def dataset_fn(context):
            local = replicas // context.num_input_pipelines
            first = context.input_pipeline_id * local

            def generate():
                for _, _, indices in self.batcher.positions(start_epoch, start_batch, self.tc.max_epochs):
                    shards, tokens = shard_batch(self.batcher, indices, replicas)
                    for replica in range(first, first + local):
                        yield (*shards[replica], tokens)

            spec = (*[tf.TensorSpec([None, None], tf.int32)] * 3, tf.TensorSpec([], tf.float32))
            return tf.data.Dataset.from_generator(generate, output_signature=spec).prefetch(2 * local)

        return self.strategy.distribute_datasets_from_function(dataset_fn)

    # -- compiled steps --------------------------------------------------------------------------------

    def _loss_sums(self, src, tgt_in, tgt_out, training):
        """(sum of token losses, number of real target tokens) for one (per-replica) batch.

        The output layer, the largest product, and the softmax run on the real target positions only,
        gathered from the decoder's outputs: a batch's padding would otherwise cost ~11% of their work
        (Bible batches, lengths rounded to 8). The gathered rows are padded to a multiple of
        OUTPUT_ROWS_MULTIPLE with rows of weight 0, so the product sees few distinct shapes (oneDNN keeps
        state per shape, see docs/design.md)."""
        import tensorflow as tf

        hidden = self.model.decoder_outputs(src, tgt_in, training=training)
        real = tf.reshape(tf.not_equal(tgt_out, 0), [-1])
        positions = tf.cast(tf.where(real)[:, 0], tf.int32)
        count = tf.size(positions)
        extra = -count % OUTPUT_ROWS_MULTIPLE
        positions = tf.concat([positions, tf.zeros([extra], tf.int32)], 0)
        weight = tf.concat([tf.ones([count]), tf.zeros([extra])], 0)
        rows = tf.gather(tf.reshape(hidden, [-1, tf.shape(hidden)[-1]]), positions)
        labels = tf.gather(tf.reshape(tgt_out, [-1]), positions)
        logits = self.model.output_logits(rows)
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        eps = self.tc.label_smoothing if training else 0.0
        if eps:
            uniform = -tf.reduce_mean(tf.nn.log_softmax(logits), axis=-1)
            nll = (1.0 - eps) * nll + eps * uniform
        return tf.reduce_sum(nll * weight), tf.cast(count, tf.float32)

    def _replica_step(self, src, tgt_in, tgt_out, global_tokens, stop):
        """One update from this replica's shard of the global batch.

        The replica's loss is its sum of token losses over the global batch's real target tokens, so the
        gradients summed over replicas are the gradient of the global mean. They are summed here to clip
        them by their global norm; Keras' optimizer sums what it is given over replicas once more, hence
        the division by the number of replicas before `apply`."""
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss_sum, _ = self._loss_sums(src, tgt_in, tgt_out, training=True)
            loss = loss_sum / tf.maximum(global_tokens, 1.0)
            if self.loss_scaling:
                loss = self.optimizer.scale_loss(loss)
        variables = self.model.trainable_variables
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync
        # Embedding gradients come as IndexedSlices whose repeated rows would make the global norm wrong:
        # make them dense, then sum over replicas.
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)]
        if replicas > 1:
            grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        clip = self.tc.clip_norm
        if self.loss_scaling:  # the gradient is scaled: clipping it at clip x scale clips the real one at clip
            clip = clip * tf.cast(self.optimizer.dynamic_scale, tf.float32)
        grads, norm = tf.clip_by_global_norm(grads, clip)
        self.optimizer.apply([g / float(replicas) for g in grads] if replicas > 1 else grads, variables)
        stop = tf.identity(stop)  # this replica's own copy of the flag, for the all-reduce
        loss_sum, stop = context.all_reduce(tf.distribute.ReduceOp.SUM, [loss_sum, stop])
        return loss_sum, stop, norm

    def _train_step(self, batch, stop):
        """One update over the global batch; returns (loss sum, real target tokens, stop?, gradient norm)."""
        src, tgt_in, tgt_out, global_tokens = batch
        loss_sum, stop, norm = self.strategy.run(self._replica_step,
                                                 args=(src, tgt_in, tgt_out, global_tokens, stop))
        first = self.strategy.experimental_local_results
        return first(loss_sum)[0], first(global_tokens)[0], first(stop)[0] > 0, first(norm)[0]

    def _eval_step(self, src, tgt_in, tgt_out):
        return self._loss_sums(src, tgt_in, tgt_out, training=False)

    # -- the loop --------------------------------------------------------------------------------------

    def fit(self):
        import tensorflow as tf

        self._restore()
        click.echo(f"training on {self.batcher.num_pairs} pairs, {self.model.count_params():,} parameters, "
                   f"{self.strategy.num_replicas_in_sync} replica(s), {self.tc.precision}, run folder {self.out}",
                   err=True)
        start_epoch, start_batch = self.count("epoch"), self.count("batch_in_epoch")
        dataset = self._distributed_dataset(start_epoch, start_batch)
        # autograph off (here and in eval_step): the model and the step have no Python control flow on
        # tensors, and converting them would only add to the time before the first step
        step_fn = tf.function(self._train_step, input_signature=[dataset.element_spec,
                                                                 tf.TensorSpec([], tf.float32)], autograph=False)
        positions = self.batcher.positions(start_epoch, start_batch, self.tc.max_epochs)
        self.clock = {"start": time.time(), "start_step": self.count("step"), "window": time.time(),
                      "loss": 0.0, "tokens": 0.0}
        previous = signal.signal(signal.SIGTERM, _raise_stop)
        reason = "max_epochs"
        try:
            for batch, (epoch, number, _) in zip(dataset, positions):
                loss_sum, tokens, stop, _ = step_fn(batch, tf.constant(float(self._time_is_up())))
                self._advance(epoch, number, float(loss_sum), float(tokens))
                reason = "max_minutes" if bool(stop) else self._after_step()
                if reason:
                    break
        except (KeyboardInterrupt, Stop):
            # a second Ctrl-C or SIGTERM must not cut the checkpoint short: both wait until it is written
            held = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                self._save_checkpoint()
            finally:
                for s, handler in held.items():
                    signal.signal(s, handler)
            click.echo(f"\ninterrupted at step {self.count('step')}: checkpoint saved; run the same command "
                       "again to resume", err=True)
            raise KeyboardInterrupt from None
        finally:
            signal.signal(signal.SIGTERM, previous)
        self._finish(reason or "max_epochs")

    def _advance(self, epoch, number, loss_sum, tokens):
        self.counters["step"].assign_add(1)
        self.counters["epoch"].assign(epoch)
        self.counters["batch_in_epoch"].assign(number + 1)
        self.clock["loss"] += loss_sum
        self.clock["tokens"] += tokens

    def _minutes(self):
        return (time.time() - self.clock["start"]) / 60.0

    def _time_is_up(self):
        """This task's view of the time limit; all tasks stop together when any of them says so."""
        return bool(self.tc.max_minutes) and self._minutes() >= self.tc.max_minutes

    def _after_step(self):
        """Log, validate and checkpoint as due; returns a reason to stop, or None."""
        step, tc = self.count("step"), self.tc
        if step % tc.log_every == 0:
            self._progress(step)
        if tc.max_steps and step >= tc.max_steps:
            return "max_steps"
        if step % tc.eval_every == 0 and self._validate(step):
            return "early_stopping"
        if step % tc.checkpoint_every == 0:
            self._save_checkpoint()
        return None

    def _progress(self, step):
        clock, minutes = self.clock, self._minutes()
        loss = clock["loss"] / max(clock["tokens"], 1.0)
        speed = clock["tokens"] / max(time.time() - clock["window"], 1e-9)
        epoch = self.count("epoch") + self.count("batch_in_epoch") / max(1, self._epoch_batches())
        eta = _eta(step, step - clock["start_step"], minutes, self.tc)
        click.echo(f"step {step:>7} | epoch {epoch:6.2f} | loss {loss:6.3f} | ppl {math.exp(min(loss, 50)):8.2f}"
                   f" | {speed:7.0f} tgt tok/s | {minutes:6.1f} min{eta}", err=True)
        self._log({"kind": "train", "step": step, "epoch": round(epoch, 4), "loss": loss,
                   "tokens_per_s": speed, "minutes": minutes})
        clock.update(loss=0.0, tokens=0.0, window=time.time())

    def _epoch_batches(self):
        if not hasattr(self, "_n_batches"):
            self._n_batches = len(self.batcher.epoch_batches(0))
        return self._n_batches

    def _validate(self, step):
        """Dev loss (and BLEU on a dev sample); keep the best weights; True when it is time to stop early.

        Every task validates (the result is the same everywhere), so all of them stop at the same step."""
        record = {"kind": "dev", "step": step, **self._dev_scores()}
        score = record.get("bleu", -record["loss"])
        improved = score > float(self.best.numpy())
        if improved:
            self.best.assign(score)
            self.counters["bad_evals"].assign(0)
            self._save_weights("best")
        else:
            self.counters["bad_evals"].assign_add(1)
        record["best"] = improved
        self._log(record)
        bleu = f" | dev BLEU {record['bleu']:5.2f}" if "bleu" in record else ""
        click.echo(f"validation at step {step}: dev loss {record['loss']:.3f}{bleu}"
                   f"{' (best so far)' if improved else ''}", err=True)
        patience = self.tc.patience
        return bool(patience) and self.count("bad_evals") >= patience

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
            tokenizers = [Tokenizer(os.path.join(self.data_dir, self.tokenizer_names[side]))
                          for side in ("src", "tgt")]
            self._translator = Translator(self.model, *tokenizers)
        src, ref = self.dev_text
        return score(self._translator.translate(src), ref)["bleu"]

    def _finish(self, reason):
        from mt.distribute import remove_worker_folder

        step = self.count("step")
        if reason != "early_stopping":
            self._validate(step)
        self._save_checkpoint()
        self._save_weights("last")
        if self.chief:
            write_json(os.path.join(self.out, "done.json"), {
                "step": step, "reason": reason, "best_score": float(self.best.numpy()),
                "epoch": self.count("epoch")})
        remove_worker_folder(self.folder, self.chief)
        click.echo(f"finished at step {step} ({reason}); weights in {os.path.join(self.out, 'weights')}",
                   err=True)


def _raise_stop(signum, frame):
    raise Stop()


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
