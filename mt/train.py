"""Stage 2: train an encoder-decoder on a prepared data folder, writing a self-contained run folder
(its layout: mt/folders.py, RunFolder).

Running the same command again on an unfinished run resumes from its last checkpoint; Ctrl-C and SIGTERM
save a checkpoint first. Training runs under a tf.distribute strategy (see mt/distribute.py) with a custom
step: each replica computes the gradient of (its sum of token losses / real target tokens in the global
batch), the gradients are summed across replicas, clipped by their global norm, and applied once, so one
replica and N replicas compute the same update for the same global batch.

This module owns the loop, the loss and the checkpoints; validation and early stopping are in
mt/validation.py, the progress lines, metrics and TensorBoard logs in mt/runlog.py.
"""

import math
import os
import signal
from dataclasses import dataclass

import click

from mt import schedule
from mt.averaging import MovingAverage, nothing
from mt.errors import UserError
from mt.folders import DataFolder, RunFolder
from mt.runlog import Clock, RunLog
from mt.validation import DevBleu, Validator, read_dev_sample

OUTPUT_ROWS_MULTIPLE = 64  # the loss's gathered target positions are padded to a multiple of this


def run(data, out, config, max_steps, max_minutes, seed, strategy="auto", cpu_replicas=0, precision=None,
        checkpoint_every=None, init_from=None, init_weights="best"):
    """`mt train`: create or resume the run folder OUT from the prepared data folder DATA.

    `init_from`: a new run starts from the weights (`init_weights`: best or last) of that trained run,
    with its model settings, a fresh optimizer and step count; the train settings are --config's when
    given, else that run's."""
    from mt.config import Config
    from mt.distribute import make_strategy, resolve_precision

    data_folder = DataFolder(data)
    manifest = data_folder.manifest()
    run_folder = RunFolder(out)
    done = run_folder.done()
    if done is not None:
        click.echo(f"{out}: run already finished at step {done['step']} ({done['reason']}); nothing to do")
        return
    init = None
    if run_folder.has_config():
        cfg = run_folder.load_config()
    elif init_from:
        cfg, init = init_config(RunFolder(init_from), data_folder, config, init_weights)
    else:
        cfg = Config.load(config)
    overrides = {"max_steps": max_steps, "max_minutes": max_minutes, "seed": seed, "precision": precision,
                 "checkpoint_every": checkpoint_every}
    for key, value in overrides.items():
        if value is not None:
            setattr(cfg.train, key, value)
    cfg.check()
    cfg.train.precision = resolve_precision(cfg.train.precision)  # the snapshot records what was used
    Trainer(cfg, data_folder, manifest, out, make_strategy(strategy, cpu_replicas, cfg.train.precision),
            init_weights=init).fit()


def init_config(source, data, config, weights):
    """(config, weights path) of a run started from the trained run `source`: its model settings, the
    train settings of `config` (or its own), its `weights`; the data's vocabularies must be its own."""
    from mt.config import Config

    own = source.load_config()
    cfg = Config(model=own.model, train=Config.load(config).train if config else own.train)
    theirs, ours = source.vocab_sizes(), data.vocab_sizes()
    if theirs != ours:
        raise UserError(f"--init-from {source.path}: its vocabularies have {theirs[0]:,} and {theirs[1]:,} pieces "
                        f"(source, target) but {data.path} has {ours[0]:,} and {ours[1]:,}: preprocess the data "
                        f"with --tokenizers-from {source.path}")
    return cfg, source.existing_weights(weights)


def load_manifest(data):
    """The checked manifest of the prepared data folder DATA, as a Trainer takes it."""
    return DataFolder(data).manifest()


def prepare_run_folder(run, data, manifest, cfg):
    """Write the run folder's tokenizers, config snapshot and data record before training starts.

    A new run copies the data folder's tokenizers; a resumed one (it has a config snapshot) keeps the
    copies it has and copies only a missing one, so the run goes on with the tokenizers it started with."""
    src_vocab, tgt_vocab = data.vocab_sizes()
    run.copy_tokenizers(data, missing_only=run.has_config())
    run.save_config(cfg)
    run.write_data_info({
        "data": os.path.abspath(data.path), "src_vocab": src_vocab, "tgt_vocab": tgt_vocab,
        "vocab": manifest["vocab"], "pairs": {k: v.get("pairs") for k, v in manifest["splits"].items()}})


@dataclass
class Counters:
    """The loop's position in the data and the early-stopping state: variables saved with every
    checkpoint, under these names."""

    step: "tf.Variable"  # int64: updates done
    epoch: "tf.Variable"  # int64: the epoch of the last batch trained on
    batch_in_epoch: "tf.Variable"  # int64: batches of that epoch done
    bad_evals: "tf.Variable"  # int64: validations since the best score
    best: "tf.Variable"  # float64: the best validation score so far
    train_seconds: "tf.Variable"  # float64: training time spent, by every process of the run (as saved)

    @classmethod
    def create(cls):
        """New counters (inside the strategy's scope, so that every replica sees them)."""
        import tensorflow as tf

        names = ("step", "epoch", "batch_in_epoch", "bad_evals")
        counts = {n: tf.Variable(0, dtype=tf.int64, trainable=False, name=n) for n in names}
        return cls(**counts, best=tf.Variable(-math.inf, dtype=tf.float64, trainable=False, name="best_score"),
                   train_seconds=tf.Variable(0.0, dtype=tf.float64, trainable=False, name="train_seconds"))

    def checkpointed(self):
        return {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "bad_evals": self.bad_evals, "best": self.best, "train_seconds": self.train_seconds}


class Stop(Exception):
    """Raised by the SIGTERM handler: save a checkpoint and exit, like Ctrl-C."""


class Trainer:
    """The training loop of one run: strategy, model, optimizer, data order, loss and checkpoints."""

    def __init__(self, cfg, data, manifest, out, strategy, init_weights=None):
        """`data`: the DataFolder (or its path) and `manifest` its manifest; `out`: the run folder's path;
        `init_weights`: a weights file a new run starts from."""
        import keras

        from mt.distribute import is_chief, worker_folder

        self.cfg, self.tc, self.strategy, self.init_weights = cfg, cfg.train, strategy, init_weights
        self.data = data if isinstance(data, DataFolder) else DataFolder(data)
        self.run = RunFolder(out)
        self.chief = is_chief(strategy)
        # the chief writes the run folder, the other tasks their checkpoints in a temporary folder
        self.own = RunFolder(worker_folder(out, self.chief))
        keras.utils.set_random_seed(self.tc.seed)
        self.src_vocab, self.tgt_vocab = self.data.vocab_sizes()
        if self.chief:
            prepare_run_folder(self.run, self.data, manifest, cfg)
        self.log = RunLog(self.run if self.chief else None)
        self._load_data()
        self._build_state()

    def _load_data(self):
        from mt.data import Batcher

        train_src, train_tgt = self.data.read_split("train")
        self.batcher = Batcher(train_src, train_tgt, self.tc.batch_tokens, self.tc.max_len, self.tc.seed,
                               multiple=self.tc.length_multiple)
        if self.batcher.num_pairs == 0:
            raise UserError(f"{self.data.path}: no training pair is within train.max_len={self.tc.max_len} "
                            "pieces; raise max_len in the config")
        dev_src, dev_tgt = self.data.read_split("dev")
        self.dev = Batcher(dev_src, dev_tgt, self.tc.batch_tokens, multiple=self.tc.length_multiple)
        self.epoch_batches = len(self.batcher.epoch_batches(0))  # for the fractional epoch of progress lines

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
            self.counters = Counters.create()
            self.average = (MovingAverage(self.model.trainable_variables, self.tc.ema_decay)
                            if self.tc.ema_decay else None)
            # gradient sums of the batches of one update, each replica its own (summed when applied)
            self.accumulated = [] if self.tc.accumulate == 1 else [
                tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, name=f"accumulated_{i}",
                            synchronization=tf.VariableSynchronization.ON_READ,
                            aggregation=tf.VariableAggregation.SUM)
                for i, v in enumerate(self.model.trainable_variables)]
        self.schedule = schedule.resolve(self.tc.schedule, self.tc.max_steps, self.tc.max_minutes)
        rng = [v.value for v in self.model.non_trainable_variables]  # dropout seed states
        extra = self.average.checkpointed() if self.average else {}
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer, rng=rng,
                                              **self.counters.checkpointed(), **extra)
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.own.checkpoints_dir, self.tc.keep_checkpoints)
        spec = [tf.TensorSpec([None, None], tf.int32)] * 3
        self.eval_step = tf.function(self._eval_step, input_signature=spec, autograph=False)
        self.validator = Validator(self.model, self.eval_step, self.dev, self.counters.best,
                                  self.counters.bad_evals, self.tc.patience,
                                  weights=self.run if self.chief else None, bleu=self._dev_bleu())

    def _dev_bleu(self):
        """BLEU on the dev sample, or None when the data folder has none or the config asks for none."""
        from mt.tokenizer import Tokenizer

        sample = read_dev_sample(self.data, self.tc.eval_bleu_sentences)
        if sample is None:
            return None
        tokenizers = [Tokenizer(self.data.tokenizer_path(side)) for side in ("src", "tgt")]
        return DevBleu(self.model, *tokenizers, *sample)

    def count(self, name):
        return int(getattr(self.counters, name).numpy())

    # -- checkpoints -----------------------------------------------------------------------------------

    def _save_checkpoint(self):
        """Every task saves (multi-worker saving is collective); only the chief's lands in the run folder."""
        self.counters.train_seconds.assign(self._train_seconds())
        self.manager.save(checkpoint_number=self.count("step"))

    def _restore(self):
        import tensorflow as tf

        latest = tf.train.latest_checkpoint(self.run.checkpoints_dir)
        if latest:
            # the model and its optimizer must come back whole: a checkpoint of another model would
            # otherwise leave the weights it lacks as they were initialized, without a word
            try:
                tf.train.Checkpoint(model=self.model, optimizer=self.optimizer).restore(
                    latest).assert_existing_objects_matched()
            except (AssertionError, ValueError) as e:
                raise UserError(f"{latest} does not hold this model's weights ({str(e).splitlines()[0][:200]}): "
                                "it was written by another model or version; train into a new --out") from None
            self.checkpoint.restore(latest).expect_partial()
            self.log.say(f"Resuming from step {self.count('step')}")
            if self.average and not int(self.average.updates.numpy()):
                self.average.reset()  # a checkpoint from before averaging was on
        elif self.init_weights:
            self.model.load_weights(self.init_weights)
            self.log.say(f"starting from the weights of {self.init_weights}")
            if self.average:
                self.average.reset()
        else:
            self._init_output_bias()
            if self.average:
                self.average.reset()
        self.seconds_before = float(self.counters.train_seconds.numpy())

    def _train_seconds(self):
        """Training time spent by the run: before this process, and since it started its loop."""
        return self.seconds_before + self.clock.seconds()

    def _rate(self, step):
        """The learning rate of update `step` (counted from 1)."""
        tc = self.tc
        fraction = schedule.progress(step - 1, self._train_seconds(), tc.max_steps, tc.max_minutes)
        return schedule.learning_rate(self.schedule, tc.learning_rate, step, fraction, tc.warmup_steps,
                                      tc.final_lr)

    def _averaged(self):
        """A block in which the model holds its averaged weights (when averaging is on)."""
        return self.average.swapped() if self.average else nothing()

    def _init_output_bias(self):
        """Start the output layer's bias at the log unigram frequencies of the training targets.

        With a zero bias, the fastest way for the first updates to lower the loss is to drive the decoder's
        output (after the attention layer's tanh) to one constant vector that encodes the unigram
        distribution; on a real corpus with a large vocabulary that saturates the tanh, its gradient
        vanishes, and training stays at the unigram loss (see docs/design.md). Every worker computes the
        same values."""
        from mt.data import unigram_log_probs

        bias = self.model.output_layer.bias
        bias.assign(unigram_log_probs(self.batcher.tgt, self.tgt_vocab).astype(bias.dtype))

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
        return loss_sums(self.model, src, tgt_in, tgt_out, self.tc.label_smoothing if training else 0.0,
                         training)

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

    def _train_step(self, batch, stop, rate):
        """One update over the global batch at learning rate `rate`; returns (loss sum, real target
        tokens, stop?, gradient norm before clipping)."""
        src, tgt_in, tgt_out, global_tokens = batch
        self.optimizer.learning_rate.assign(rate)
        loss_sum, stop, norm = self.strategy.run(self._replica_step,
                                                 args=(src, tgt_in, tgt_out, global_tokens, stop))
        if self.average:
            self.average.update()
        first = self.strategy.experimental_local_results
        return first(loss_sum)[0], first(global_tokens)[0], first(stop)[0] > 0, first(norm)[0]

    def _gradients(self, src, tgt_in, tgt_out, scale):
        """(loss sum, dense gradients of loss sum / scale) of this replica's shard (loss-scaled under
        mixed_float16). Embedding gradients come as IndexedSlices whose repeated rows would make the
        global norm wrong: they are made dense."""
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss_sum, _ = self._loss_sums(src, tgt_in, tgt_out, training=True)
            loss = loss_sum / scale
            if self.loss_scaling:
                loss = self.optimizer.scale_loss(loss)
        return loss_sum, [tf.convert_to_tensor(g) for g in tape.gradient(loss, self.model.trainable_variables)]

    def _accumulate_replica(self, src, tgt_in, tgt_out):
        """Add this replica's gradient of its loss sum to its accumulators (train.accumulate > 1)."""
        import tensorflow as tf

        loss_sum, grads = self._gradients(src, tgt_in, tgt_out, 1.0)
        for total, grad in zip(self.accumulated, grads):
            total.assign_add(grad)
        return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, loss_sum)

    def _apply_replica(self, tokens, stop):
        """One update from the accumulated gradients of `tokens` real target tokens: the gradient of
        their mean loss, summed over replicas, clipped by its global norm and applied, as `_replica_step`
        does for one batch; the accumulators start again at zero."""
        import tensorflow as tf

        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync
        grads = [tf.identity(total) / tf.maximum(tokens, 1.0) for total in self.accumulated]
        if replicas > 1:
            grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        clip = self.tc.clip_norm
        if self.loss_scaling:
            clip = clip * tf.cast(self.optimizer.dynamic_scale, tf.float32)
        grads, norm = tf.clip_by_global_norm(grads, clip)
        self.optimizer.apply([g / float(replicas) for g in grads] if replicas > 1 else grads,
                             self.model.trainable_variables)
        for total in self.accumulated:
            total.assign(tf.zeros_like(total))
        stop = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.identity(stop))
        return stop, norm

    def _accumulate_step(self, batch):
        """Add one global batch's gradient to the accumulators; returns (loss sum, real target tokens)."""
        src, tgt_in, tgt_out, global_tokens = batch
        loss_sum = self.strategy.run(self._accumulate_replica, args=(src, tgt_in, tgt_out))
        first = self.strategy.experimental_local_results
        return first(loss_sum)[0], first(global_tokens)[0]

    def _apply_step(self, tokens, stop, rate):
        """Apply the accumulated update at learning rate `rate`; returns (stop?, gradient norm)."""
        self.optimizer.learning_rate.assign(rate)
        stop, norm = self.strategy.run(self._apply_replica, args=(tokens, stop))
        if self.average:
            self.average.update()
        first = self.strategy.experimental_local_results
        return first(stop)[0] > 0, first(norm)[0]

    def _eval_step(self, src, tgt_in, tgt_out):
        return self._loss_sums(src, tgt_in, tgt_out, training=False)

    # -- the loop --------------------------------------------------------------------------------------

    def fit(self):
        import tensorflow as tf

        self._restore()
        self.log.say(f"training on {self.batcher.num_pairs} pairs, {self.model.count_params():,} parameters, "
                     f"{self.strategy.num_replicas_in_sync} replica(s), {self.tc.precision}, run folder "
                     f"{self.run.path}")
        start_epoch, start_batch = self.count("epoch"), self.count("batch_in_epoch")
        dataset = self._distributed_dataset(start_epoch, start_batch)
        # autograph off (here and in eval_step): the model and the step have no Python control flow on
        # tensors, and converting them would only add to the time before the first step
        scalar = tf.TensorSpec([], tf.float32)
        step_fn = tf.function(self._train_step, input_signature=[dataset.element_spec, scalar, scalar],
                              autograph=False)
        if self.accumulated:
            accumulate_fn = tf.function(self._accumulate_step, input_signature=[dataset.element_spec],
                                        autograph=False)
            apply_fn = tf.function(self._apply_step, input_signature=[scalar] * 3, autograph=False)
        pending = {"batches": 0, "loss": 0.0, "tokens": 0.0}  # batches accumulated for the next update
        positions = self.batcher.positions(start_epoch, start_batch, self.tc.max_epochs)
        self.clock = Clock.started(self.count("step"))
        previous = signal.signal(signal.SIGTERM, _raise_stop)
        reason = "max_epochs"
        try:
            for batch, (epoch, number, _) in zip(dataset, positions):
                rate = self._rate(self.count("step") + 1)
                time_up = tf.constant(float(self._time_is_up()))
                if self.accumulated:
                    # an update every train.accumulate batches; the data position is saved only with an
                    # update, so batches accumulated when the run stops are read again on resume
                    loss_sum, tokens = accumulate_fn(batch)
                    pending["batches"] += 1
                    pending["loss"] += float(loss_sum)
                    pending["tokens"] += float(tokens)
                    if pending["batches"] < self.tc.accumulate:
                        continue
                    stop, norm = apply_fn(tf.constant(pending["tokens"]), time_up, tf.constant(rate, tf.float32))
                    loss_sum, tokens = pending["loss"], pending["tokens"]
                    pending.update(batches=0, loss=0.0, tokens=0.0)
                else:
                    loss_sum, tokens, stop, norm = step_fn(batch, time_up, tf.constant(rate, tf.float32))
                self._advance(epoch, number, float(loss_sum), float(tokens), float(norm), rate)
                reason = "max_minutes" if bool(stop) else self._after_step()
                if reason:
                    break
        except (KeyboardInterrupt, Stop):
            # a second Ctrl-C or SIGTERM must not cut the checkpoint short: both wait until it is written
            held = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                self._save_checkpoint()
                self.log.flush()
            finally:
                for s, handler in held.items():
                    signal.signal(s, handler)
            self.log.say(f"\ninterrupted at step {self.count('step')}: checkpoint saved; run the same command "
                         "again to resume")
            raise KeyboardInterrupt from None
        finally:
            signal.signal(signal.SIGTERM, previous)
        self._finish(reason or "max_epochs")

    def _advance(self, epoch, number, loss_sum, tokens, norm, rate):
        self.counters.step.assign_add(1)
        self.counters.epoch.assign(epoch)
        self.counters.batch_in_epoch.assign(number + 1)
        self.clock.add(loss_sum, tokens, norm, rate)

    def _time_is_up(self):
        """This task's view of the time limit (the run's training time, resumed runs included); all tasks
        stop together when any of them says so."""
        return bool(self.tc.max_minutes) and self._train_seconds() >= 60.0 * self.tc.max_minutes

    def _after_step(self):
        """Log, validate and checkpoint as due; returns a reason to stop, or None."""
        step, tc = self.count("step"), self.tc
        if step % tc.log_every == 0:
            epoch = self.count("epoch") + self.count("batch_in_epoch") / max(1, self.epoch_batches)
            self.log.progress(step, epoch, self.clock, tc.max_steps, tc.max_minutes)
        if tc.max_steps and step >= tc.max_steps:
            return "max_steps"
        if step % tc.eval_every == 0 and self._validate(step):
            return "early_stopping"
        if step % tc.checkpoint_every == 0:
            self._save_checkpoint()
        return None

    def _validate(self, step):
        """Validate (the averaged weights, when averaging is on) and log it; True when it is time to stop
        early."""
        with self._averaged():
            validation = self.validator(step)
        self.log.validation(validation)
        return validation.stop

    def _finish(self, reason):
        from mt.distribute import remove_worker_folder

        step = self.count("step")
        if reason != "early_stopping":
            self._validate(step)
        self._save_checkpoint()
        if self.chief:
            with self._averaged():
                self.run.save_weights(self.model, "last")
            self.run.write_done({"step": step, "reason": reason, "best_score": float(self.counters.best.numpy()),
                                 "epoch": self.count("epoch")})
        self.log.flush()
        remove_worker_folder(self.own.path, self.chief)
        self.log.say(f"finished at step {step} ({reason}); weights in {self.run.weights_dir}")


def loss_sums(model, src, tgt_in, tgt_out, label_smoothing=0.0, training=False):
    """(sum of token losses, number of real target tokens) of `model` on one (per-replica) batch.

    The output layer, the largest product, and the softmax run on the real target positions only,
    gathered from the decoder's outputs, since the padding of a batch would add to their work for nothing
    (docs/design.md). The gathered rows are padded to a multiple of OUTPUT_ROWS_MULTIPLE with rows of
    weight 0, so the product sees few distinct shapes (oneDNN keeps state per shape, see docs/design.md)."""
    import tensorflow as tf

    hidden = model.decoder_outputs(src, tgt_in, training=training)
    real = tf.reshape(tf.not_equal(tgt_out, 0), [-1])
    positions = tf.cast(tf.where(real)[:, 0], tf.int32)
    count = tf.size(positions)
    extra = -count % OUTPUT_ROWS_MULTIPLE
    positions = tf.concat([positions, tf.zeros([extra], tf.int32)], 0)
    weight = tf.concat([tf.ones([count]), tf.zeros([extra])], 0)
    rows = tf.gather(tf.reshape(hidden, [-1, tf.shape(hidden)[-1]]), positions)
    labels = tf.gather(tf.reshape(tgt_out, [-1]), positions)
    logits = model.output_logits(rows)
    nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    if label_smoothing:
        uniform = -tf.reduce_mean(tf.nn.log_softmax(logits), axis=-1)
        nll = (1.0 - label_smoothing) * nll + label_smoothing * uniform
    return tf.reduce_sum(nll * weight), tf.cast(count, tf.float32)


def _raise_stop(signum, frame):
    raise Stop()
