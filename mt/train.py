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
from dataclasses import dataclass

import click

from mt import schedule
from mt.averaging import MovingAverage, nothing
from mt.errors import UserError
from mt.folders import DataFolder, RunFolder
from mt.resume import (RESTART_HINT, Stop, Stoppable, checkpoint_files, config_to_resume, configured,
                       drop_damaged_state_file, restore_newest)
from mt.runlog import Clock, RunLog
from mt.validation import DevBleu, Validator, read_dev_sample

OUTPUT_ROWS_MULTIPLE = 64  # the loss's gathered target positions are padded to a multiple of this


# settings a resumed run may change: they bound or pace the run, but leave the model, its data and the
# order of its batches as they were
SAFE_CHANGES = ("train.batch_tokens", "train.max_steps", "train.max_minutes", "train.max_epochs",
                "train.eval_every", "train.checkpoint_every", "train.log_every", "train.patience",
                "train.eval_bleu_sentences")


def run(data, out, config, max_steps, max_minutes, seed, strategy="auto", cpu_replicas=0, precision=None,
        checkpoint_every=None, restart=False, init_from=None, init_weights="best", worker_timeout=None,
        join_timeout=None):
    """`mt train`: create or resume the run folder OUT from the prepared data folder DATA; `restart`
    discards what OUT holds and starts a new run there.

    `init_from`: a new run starts from the weights (`init_weights`: best or last) of that trained run,
    with its model settings, a fresh optimizer and step count; the train settings are --config's when
    given, else that run's.

    Multi-worker: `join_timeout` bounds the wait for every task to join (default:
    mt.distribute.JOIN_TIMEOUT); a task that sends no heartbeat for `worker_timeout` seconds counts as gone
    (default: mt.distribute.WORKER_TIMEOUT), and the others stop with an error naming it."""
    import contextlib

    from mt.distribute import JOIN_TIMEOUT, WORKER_TIMEOUT, chief_in_tf_config, make_strategy

    data_folder = DataFolder(data)
    manifest = data_folder.manifest()
    run_folder = RunFolder(out)
    overrides = {"max_steps": max_steps, "max_minutes": max_minutes, "seed": seed, "precision": precision,
                 "checkpoint_every": checkpoint_every}
    # the chief holds the run folder for the whole run, so a second `mt train` on it stops at once
    with run_folder.lock() if chief_in_tf_config() else contextlib.nullcontext():
        if restart and run_folder.has_config():
            run_folder.clear()
            click.echo(f"{out}: --restart: the earlier run's checkpoints, weights and metrics were removed",
                       err=True)
        init = None
        if init_from and not run_folder.has_config():
            config, init = init_config(RunFolder(init_from), data_folder, config, init_weights)
        cfg = resumed_config(run_folder, data_folder, config, overrides)
        if cfg is None:
            return
        strategy = make_strategy(strategy, cpu_replicas, cfg.train.precision,
                                 WORKER_TIMEOUT if worker_timeout is None else worker_timeout,
                                 JOIN_TIMEOUT if join_timeout is None else join_timeout)
        try:
            trainer = Trainer(cfg, data_folder, manifest, out, strategy, init_weights=init)
        except lost_worker_errors() as e:  # (creating the variables broadcasts their first values)
            if is_multi_worker(strategy):
                raise lost_worker_error(e, strategy, run_folder) from None
            raise
        trainer.fit()


def lost_worker_errors():
    """The errors of a collective operation that failed because another task of the cluster is gone."""
    import tensorflow as tf

    return (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError,
            tf.errors.AbortedError)


def is_multi_worker(strategy):
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def lost_worker_error(error, strategy, run, step=None):
    """The UserError of a multi-worker run whose collective operation failed with `error` because another
    task is gone: it names that task and the checkpoint to resume from (no collective checkpoint can be
    written without the lost task, and the chief's last one is left as it is)."""
    from mt.distribute import cluster_spec, heartbeat_timeout, is_chief, lost_worker

    resolver = strategy.cluster_resolver
    gone = lost_worker(str(error), cluster_spec().get("cluster", {}), (resolver.task_type, resolver.task_id),
                       heartbeat_timeout())
    newest = checkpoint_files(run)[0]  # (a worker sees the chief's on a shared file system)
    again = "start every worker again with the same command"
    if newest:
        then = f"{run.path} keeps its last checkpoint, {os.path.basename(newest[0])}: {again} to resume from it"
    elif is_chief(strategy):
        then = f"{run.path} holds no checkpoint yet: {again}"
    else:
        then = f"the chief's run folder keeps its last checkpoint, if any: {again} to resume from it"
    when = f" in step {step}" if step else ""
    return UserError(f"{gone}: training stopped{when}; {then}")


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


def resumed_config(run_folder, data_folder, config, overrides):
    """The config to train with: a new run's from --config; a resumed run's from its snapshot, with the
    safe changes that --config or the options ask for; None when the run has finished and nothing changed.

    A resumed run must go on with the data and the settings it started with: other data, or a change to
    anything else than SAFE_CHANGES, is a UserError suggesting --restart or a new --out."""
    from mt.config import Config

    if not run_folder.has_config():
        return configured(Config, config, overrides)
    recorded = run_folder.data_info().get("fingerprint") if run_folder.is_run() else None
    if recorded is not None and recorded != data_folder.fingerprint():
        raise UserError(f"{run_folder.path} was trained on other data than {data_folder.path} holds now (its "
                        f"manifest or tokenizers changed since): {RESTART_HINT}")
    return config_to_resume(run_folder, Config, config, overrides, SAFE_CHANGES)


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
        "data": os.path.abspath(data.path), "fingerprint": data.fingerprint(), "src_vocab": src_vocab, "tgt_vocab": tgt_vocab,
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


class Trainer(Stoppable):
    """The training loop of one run: strategy, model, optimizer, data order, loss and checkpoints."""

    def __init__(self, cfg, data, manifest, out, strategy, init_weights=None):
        """`data`: the DataFolder (or its path) and `manifest` its manifest; `out`: the run folder's path."""
        import keras

        from mt.distribute import is_chief, remove_worker_folder, worker_folder

        self.cfg, self.tc, self.strategy, self.init_weights = cfg, cfg.train, strategy, init_weights
        self.data = data if isinstance(data, DataFolder) else DataFolder(data)
        self.run = RunFolder(out)
        self.chief = is_chief(strategy)
        # the chief writes the run folder, the other tasks their checkpoints in a temporary folder, removed
        # when fit() ends in any way (or here, when the trainer cannot be made)
        self.own = RunFolder(worker_folder(out, self.chief))
        try:
            keras.utils.set_random_seed(self.tc.seed)
            self.src_vocab, self.tgt_vocab = self.data.vocab_sizes()
            if self.chief:
                prepare_run_folder(self.run, self.data, manifest, cfg)
            self.log = RunLog(self.run if self.chief else None)
            self._load_data()
            self._build_state()
        except BaseException:
            remove_worker_folder(self.own.path, self.chief)
            raise

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
            # gradient and loss sums of the batches of one update, each replica its own (summed when applied)
            local = dict(trainable=False, synchronization=tf.VariableSynchronization.ON_READ,
                         aggregation=tf.VariableAggregation.SUM)
            self.accumulated = [] if self.tc.accumulate == 1 else [
                tf.Variable(tf.zeros(v.shape, v.dtype), name=f"accumulated_{i}", **local)
                for i, v in enumerate(self.model.trainable_variables)]
            self.accumulated_loss = tf.Variable(0.0, name="accumulated_loss", **local) if self.accumulated else None
        self.schedule = schedule.resolve(self.tc.schedule, self.tc.max_steps, self.tc.max_minutes)
        rng = [v.value for v in self.model.non_trainable_variables]  # dropout seed states
        extra = self.average.checkpointed() if self.average else {}
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer, rng=rng,
                                              **self.counters.checkpointed(), **extra)
        self._drop_damaged_state_file()
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.own.checkpoints_dir,
                                                  self.tc.keep_checkpoints)
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

    def _drop_damaged_state_file(self):
        drop_damaged_state_file(self.own, self.log.say)

    def _restore(self):
        import tensorflow as tf

        # the model and its optimizer must come back whole: a checkpoint of another model would otherwise
        # leave the weights it lacks as they were initialized, without a word
        required = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer)
        if restore_newest(self.run, required, self.checkpoint, self.log.say):
            self.log.say(f"Resuming from step {self.count('step')}")
            if self.average and not int(self.average.updates.numpy()):
                self.average.reset()  # a checkpoint from before averaging was on
        else:
            if self.init_weights:
                self.model.load_weights(self.init_weights)
                self.log.say(f"starting from the weights of {self.init_weights}")
            else:
                self._init_output_bias()
            if self.average:
                self.average.reset()
        # best weights on disk may score higher than the restored counters say (a fallback to an older
        # checkpoint, or a run killed before its first checkpoint): only a better score replaces them
        self.validator.floor = self.run.weights_score("best") if self.chief else None
        self.seconds_before = float(self.counters.train_seconds.numpy())

    def _train_seconds(self):
        """Training time spent by the run: before this process, and since it started its loop."""
        return self.seconds_before + self.clock.seconds()

    def _rate(self, step):
        """The learning rate of update `step` (counted from 1)."""
        tc = self.tc
        fraction = schedule.progress(step - 1, self._train_seconds(), tc.max_steps, tc.max_minutes)
        return schedule.learning_rate(self.schedule, tc.learning_rate, step, fraction, tc.warmup_steps,
                                      tc.final_lr, tc.cooldown)

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

    def _replica_step(self, src, tgt_in, tgt_out, global_tokens, flags):
        """One update from this replica's shard of the global batch (see `_update_replica`).

        The replica's loss is its sum of token losses over the global batch's real target tokens, so the
        gradients summed over replicas are the gradient of the global mean."""
        loss_sum, grads = self._gradients(src, tgt_in, tgt_out, global_tokens)
        return self._update_replica(grads, loss_sum, flags)

    def _gradients(self, src, tgt_in, tgt_out, scale):
        """(loss sum, dense gradients of loss sum / scale) of this replica's shard, loss-scaled under
        mixed_float16. Embedding gradients come as IndexedSlices whose repeated rows would make the global
        norm wrong: they are made dense."""
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss_sum, _ = self._loss_sums(src, tgt_in, tgt_out, training=True)
            loss = loss_sum / tf.maximum(scale, 1.0)
            if self.loss_scaling:
                loss = self.optimizer.scale_loss(loss)
        return loss_sum, [tf.convert_to_tensor(g) for g in tape.gradient(loss, self.model.trainable_variables)]

    def _update_replica(self, grads, loss_sum, flags):
        """Apply this replica's share `grads` of one update, only when the loss and the gradient norm are
        finite; returns (loss sum, flags, gradient norm, finite?), the loss and the flags summed over the
        replicas.

        The gradients are summed over replicas here to clip them by their global norm; Keras' optimizer
        sums what it is given over replicas once more, hence the division by the number of replicas
        before `apply`."""
        import tensorflow as tf

        variables = self.model.trainable_variables
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync
        if replicas > 1:
            grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        clip = self.tc.clip_norm
        if self.loss_scaling:  # the gradient is scaled: clipping it at clip x scale clips the real one at clip
            clip = clip * tf.cast(self.optimizer.dynamic_scale, tf.float32)
        grads, norm = tf.clip_by_global_norm(grads, clip)
        flags = tf.identity(flags)  # this replica's own copy of the flags, for the all-reduce
        loss_sum, flags = context.all_reduce(tf.distribute.ReduceOp.SUM, [loss_sum, flags])
        # every replica sees the same summed loss and norm, so all of them skip a bad update together; with
        # loss scaling an infinite gradient is the optimizer's own signal to lower its scale, not an error
        finite = tf.math.is_finite(loss_sum)
        if not self.loss_scaling:
            finite = tf.logical_and(finite, tf.math.is_finite(norm))
        grads = [g / float(replicas) for g in grads] if replicas > 1 else grads

        def apply(gradients):
            self.optimizer.apply(gradients, variables)

        if tf.__internal__.distribute.strategy_supports_no_merge_call():
            tf.cond(finite, lambda: apply(grads), lambda: None)
        else:  # the optimizer's apply makes a merge call, which a cond cannot hold: decide across replicas
            def across(strategy, gradients, ok):
                tf.cond(strategy.experimental_local_results(ok)[0],
                        lambda: strategy.extended.call_for_each_replica(apply, args=(gradients,)), lambda: None)

            context.merge_call(across, args=(grads, finite))
        return loss_sum, flags, norm, finite

    def _accumulate_replica(self, src, tgt_in, tgt_out):
        """Add this replica's gradient of its loss sum, and the loss sum, to its accumulators
        (train.accumulate > 1)."""
        loss_sum, grads = self._gradients(src, tgt_in, tgt_out, 1.0)
        for total, grad in zip(self.accumulated, grads):
            total.assign_add(grad)
        self.accumulated_loss.assign_add(loss_sum)
        return loss_sum

    def _apply_replica(self, tokens, flags):
        """One update from the accumulated gradients of `tokens` real target tokens: the gradient of their
        mean loss, applied as `_update_replica` applies one batch's; the accumulators start again at zero."""
        import tensorflow as tf

        grads = [tf.identity(total) / tf.maximum(tokens, 1.0) for total in self.accumulated]
        loss_sum = tf.identity(self.accumulated_loss)
        for total in self.accumulated:
            total.assign(tf.zeros_like(total))
        self.accumulated_loss.assign(0.0)
        return self._update_replica(grads, loss_sum, flags)

    def _accumulate_step(self, batch):
        """Add one global batch's gradient to the accumulators; returns its real target tokens."""
        src, tgt_in, tgt_out, global_tokens = batch
        self.strategy.run(self._accumulate_replica, args=(src, tgt_in, tgt_out))
        return self.strategy.experimental_local_results(global_tokens)[0]

    def _advance_position(self, finite, epoch, number):
        """Move the loop's counters to batch `number` of `epoch`, in the compiled step (an update that was
        not applied moves nothing)."""
        import tensorflow as tf

        counters = self.counters
        counters.step.assign_add(tf.cast(finite, tf.int64))
        counters.epoch.assign(tf.where(finite, epoch, counters.epoch))
        counters.batch_in_epoch.assign(tf.where(finite, number + 1, counters.batch_in_epoch))
        if self.average:
            self.average.update()

    def _apply_step(self, tokens, flags, rate, epoch, number):
        """Apply the accumulated update at learning rate `rate`, advancing the position as `_train_step`
        does; returns (loss sum, flags summed over the tasks, gradient norm, finite?)."""
        self.optimizer.learning_rate.assign(rate)
        loss_sum, flags, norm, finite = self.strategy.run(self._apply_replica, args=(tokens, flags))
        first = self.strategy.experimental_local_results
        finite = first(finite)[0]
        self._advance_position(finite, epoch, number)
        return first(loss_sum)[0], first(flags)[0], first(norm)[0], finite

    def _train_step(self, batch, flags, rate, epoch, number):
        """One update over the global batch at learning rate `rate`, with the loop's position advanced to
        batch `number` of `epoch` in the same call (a signal cannot fall between the update and the
        position); returns (loss sum, real target tokens, flags summed over the tasks, gradient norm
        before clipping, finite?). `flags`: [time is up, stop requested] on this task."""
        import tensorflow as tf

        src, tgt_in, tgt_out, global_tokens = batch
        self.optimizer.learning_rate.assign(rate)
        loss_sum, flags, norm, finite = self.strategy.run(self._replica_step,
                                                          args=(src, tgt_in, tgt_out, global_tokens, flags))
        first = self.strategy.experimental_local_results
        finite = first(finite)[0]
        self._advance_position(finite, epoch, number)
        return first(loss_sum)[0], first(global_tokens)[0], first(flags)[0], first(norm)[0], finite

    def _eval_step(self, src, tgt_in, tgt_out):
        return self._loss_sums(src, tgt_in, tgt_out, training=False)

    # -- the loop --------------------------------------------------------------------------------------

    def fit(self):
        """Train until the budget, early stopping or a stop request ends the run."""
        from mt.distribute import remove_worker_folder

        try:
            self._fit()
        except lost_worker_errors() as e:
            # a collective operation (a step's all-reduce, or a checkpoint's read of summed variables)
            # failed: another task of the cluster is gone
            if is_multi_worker(self.strategy):
                self.log.flush()
                raise lost_worker_error(e, self.strategy, self.run, self.count("step") + 1) from None
            raise
        finally:
            remove_worker_folder(self.own.path, self.chief)  # a task's own checkpoints go with it

    def _fit(self):
        import tensorflow as tf

        self._restore()
        self.log.say(f"training on {self.batcher.num_pairs} pairs, {self.model.count_params():,} parameters, "
                     f"{self.strategy.num_replicas_in_sync} replica(s), {self.tc.precision}, run folder "
                     f"{self.run.path}")
        start_epoch, start_batch = self.count("epoch"), self.count("batch_in_epoch")
        dataset = self._distributed_dataset(start_epoch, start_batch)
        # autograph off (here and in eval_step): the model and the step have no Python control flow on
        # tensors, and converting them would only add to the time before the first step
        scalar, count = tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.int64)
        step_fn = tf.function(self._train_step, autograph=False, input_signature=[
            dataset.element_spec, tf.TensorSpec([2], tf.float32), scalar, count, count])
        if self.accumulated:
            accumulate_fn = tf.function(self._accumulate_step, input_signature=[dataset.element_spec],
                                        autograph=False)
            apply_fn = tf.function(self._apply_step, autograph=False, input_signature=[
                scalar, tf.TensorSpec([2], tf.float32), scalar, count, count])
        pending = {"batches": 0, "tokens": 0.0}  # batches accumulated for the next update
        positions = self.batcher.positions(start_epoch, start_batch, self.tc.max_epochs)
        self.clock = Clock.started(self.count("step"))
        # SIGTERM and a first Ctrl-C only ask to stop: the loop stops after the step and its bookkeeping,
        # with every task at the same step (the request travels with the step's all-reduce)
        reason = "max_steps" if self.tc.max_steps and self.count("step") >= self.tc.max_steps else None
        with self.stop_requests():
            try:
                for batch, (epoch, number, _) in ([] if reason else zip(dataset, positions)):
                    rate = self._rate(self.count("step") + 1)
                    flags = tf.constant([float(self._time_is_up()), float(self.stop_requested)])
                    position = (tf.constant(rate, tf.float32), tf.constant(epoch, tf.int64),
                                tf.constant(number, tf.int64))
                    if self.accumulated:
                        # an update every train.accumulate batches; the position moves only with an
                        # update, so batches accumulated when the run stops are read again on resume
                        pending["tokens"] += float(accumulate_fn(batch))
                        pending["batches"] += 1
                        if pending["batches"] < self.tc.accumulate:
                            continue
                        tokens = pending["tokens"]
                        pending.update(batches=0, tokens=0.0)
                        loss_sum, flags, norm, finite = apply_fn(tf.constant(tokens, tf.float32), flags,
                                                                 *position)
                    else:
                        loss_sum, tokens, flags, norm, finite = step_fn(batch, flags, *position)
                    if not bool(finite):
                        self._diverged(float(loss_sum) / max(float(tokens), 1.0), float(norm), rate)
                    self._advance(epoch, number, float(loss_sum), float(tokens), float(norm), rate)
                    time_up, interrupted = (bool(f > 0) for f in flags.numpy())
                    reason = "max_minutes" if time_up else self._after_step()
                    if reason:
                        break
                    if interrupted:
                        raise Stop()
            except (KeyboardInterrupt, Stop):
                self.interrupted()
            self._finish(reason or "max_epochs")  # a stop request now waits for the run to finish

    def _diverged(self, loss, norm, rate):
        """Stop the run at a step whose loss or gradient norm is not finite (its update was not applied)."""
        self.log.flush()
        latest = self.manager.latest_checkpoint
        kept = f"the last checkpoint, {os.path.basename(latest)}, is kept" if latest else "no checkpoint was written"
        raise UserError(f"step {self.count('step') + 1}: the loss ({loss:g}) or the gradient norm ({norm:g}) is not "
                        f"finite at learning rate {rate:g}; the update was not applied and training stopped "
                        f"({kept}): lower train.learning_rate (now {self.tc.learning_rate:g}) or "
                        f"train.clip_norm (now {self.tc.clip_norm:g}), then resume or run with --restart")

    def _advance(self, epoch, number, loss_sum, tokens, norm, rate):
        """The step's statistics for the progress lines (its counters moved inside the step)."""
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
        step = self.count("step")
        if reason != "early_stopping":
            self._save_checkpoint()  # the steps since the last checkpoint survive a kill during validation
            self._validate(step)
        self._save_checkpoint()
        if self.chief:
            with self._averaged():
                self.run.save_weights(self.model, "last")
            self.run.write_done({"step": step, "reason": reason, "best_score": float(self.counters.best.numpy()),
                                 "epoch": self.count("epoch")})
        self.log.flush()
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

