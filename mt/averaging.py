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
