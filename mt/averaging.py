"""Weight averaging: an exponential moving average of the trainable weights, kept beside them, and the
average of saved checkpoints (`mt average`).

The moving average is updated after every update, at a rate that starts fast: decay_t = min(decay,
(1 + t) / (10 + t)), so that the first updates, far from where training ends, soon weigh little. It is
what validation scores and what the best and last weights hold (`swapped`), while checkpoints keep the
raw weights and the average both, so that a resumed run continues both.
"""

import contextlib


class MovingAverage:
    """Shadow copies of `variables`, updated by `update()` (a cross-replica call inside the train step)."""

    def __init__(self, variables, decay):
        import tensorflow as tf

        self.variables, self.decay = list(variables), decay
        self.shadows = [tf.Variable(v.value if hasattr(v, "value") else v, trainable=False,
                                    name=f"average_{i}") for i, v in enumerate(self.variables)]
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="average_updates")

    def checkpointed(self):
        return {"average": self.shadows, "average_updates": self.updates}

    def reset(self):
        """Start the average at the weights as they are (after their initialization or a restore that
        held no average)."""
        for variable, shadow in zip(self.variables, self.shadows):
            shadow.assign(variable)
        self.updates.assign(0)

    def update(self):
        import tensorflow as tf

        count = tf.cast(self.updates.assign_add(1), tf.float32)
        decay = tf.minimum(self.decay, (1.0 + count) / (10.0 + count))
        for variable, shadow in zip(self.variables, self.shadows):
            shadow.assign(decay * shadow + (1.0 - decay) * tf.cast(variable, shadow.dtype))

    def _swap(self):
        import tensorflow as tf

        for variable, shadow in zip(self.variables, self.shadows):
            held = tf.identity(variable)
            variable.assign(shadow)
            shadow.assign(held)

    @contextlib.contextmanager
    def swapped(self):
        """Inside the block the variables hold the average (and the shadows the raw weights)."""
        self._swap()
        try:
            yield
        finally:
            self._swap()


@contextlib.contextmanager
def nothing():
    yield


def checkpoint_paths(run):
    """The checkpoints a RunFolder keeps, oldest first (the prefixes tf.train reads)."""
    import tensorflow as tf

    state = tf.train.get_checkpoint_state(run.checkpoints_dir)
    return list(state.all_model_checkpoint_paths) if state else []


def _restored(model, path):
    """Restore the model weights of the checkpoint `path` into `model`.

    A checkpoint of `mt train` holds the model and its optimizer, and a weight the model keeps in a list
    (the recurrent cells) is saved under the optimizer's list of the variables it updates, not under the
    model: the model is restored here through an optimizer of the same structure, a plain Adam or one
    wrapped for loss scaling (mixed_float16), whichever the checkpoint holds."""
    import keras
    import tensorflow as tf

    from mt.errors import UserError

    failure = None
    for loss_scaling in (False, True):
        optimizer = keras.optimizers.Adam()
        if loss_scaling:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
        status = tf.train.Checkpoint(model=model, optimizer=optimizer).restore(path).expect_partial()
        try:
            status.assert_existing_objects_matched()
            return
        except AssertionError as e:
            failure = failure or e
    raise UserError(f"{path} does not hold this run's model ({str(failure).splitlines()[0][:200]})")


def average_checkpoints(model, paths):
    """Load into `model` the elementwise mean of its weights in the checkpoints `paths` of `mt train`.
    Weights that are not floating point (a random generator's state) keep their value."""
    import numpy as np

    sums = None
    for path in paths:
        _restored(model, path)
        values = [np.asarray(v.numpy()) for v in model.trainable_weights]
        sums = [v.astype(np.float64) for v in values] if sums is None else [s + v for s, v in zip(sums, values)]
    for variable, total in zip(model.trainable_weights, sums):
        variable.assign((total / len(paths)).astype(np.asarray(variable.numpy()).dtype))


def run(run, last, out):
    """`mt average`: the mean of the model weights of RUN's last `last` checkpoints (all it keeps when
    None), saved as the weights file `out`."""
    import os

    from mt.errors import UserError
    from mt.folders import RunFolder
    from mt.model import build_model, weights_to_be_loaded

    folder = RunFolder(run)
    if not RunFolder.is_weights_file_name(out):
        raise UserError(f"--out {out}: a weights file name must end in {RunFolder.WEIGHTS_SUFFIX}")
    src_vocab, tgt_vocab = folder.vocab_sizes()
    config = folder.load_config()
    paths = checkpoint_paths(folder)
    if not paths:
        raise UserError(f"{folder.path} holds no checkpoints ({folder.checkpoints_dir} is empty or missing)")
    if last is not None and not 1 <= last <= len(paths):
        raise UserError(f"--last {last}: {folder.path} keeps {len(paths)} checkpoint(s) (train.keep_checkpoints "
                        f"sets how many a run keeps)")
    chosen = paths[-last:] if last else paths
    with weights_to_be_loaded():
        model = build_model(config.model, src_vocab, tgt_vocab)
    average_checkpoints(model, chosen)
    RunFolder.save_weights_file(model, out)
    import click

    names = ", ".join(os.path.basename(p) for p in chosen)
    click.echo(f"averaged {len(chosen)} checkpoint(s) ({names}) -> {out}", err=True)
