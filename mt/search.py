"""Search over the model's `decode_step(ids, state) -> (logits, state)`, compiled into one TensorFlow graph.

The whole search is a `tf.while_loop` inside a `tf.function`, batched over sentences: no Python runs per
token. A sentence that has produced EOS is finished: it only emits padding afterwards, and the loop ends
when every sentence has finished or the length limit is reached.
"""

import tensorflow as tf

from mt.model import BOS, EOS, PAD


class GreedySearch:
    """Pick the most probable token at every step."""

    def __init__(self, model):
        self.model = model
        spec = [tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([], tf.int32)]
        self._search = tf.function(self._run, input_signature=spec)

    def __call__(self, src, max_steps):
        """src [B, S] int32 -> (ids [B, T] int32 ending in EOS or cut at the limit, scores [B] float32)."""
        ids, scores = self._search(tf.convert_to_tensor(src, tf.int32), tf.constant(max_steps, tf.int32))
        return ids.numpy(), scores.numpy()

    def _run(self, src, max_steps):
        state = self.model.encode(src)
        batch = tf.shape(src)[0]
        tokens = tf.TensorArray(tf.int32, size=0, dynamic_size=True)

        def cond(t, prev, finished, score, state, tokens):
            return tf.logical_and(t < max_steps, tf.logical_not(tf.reduce_all(finished)))

        def body(t, prev, finished, score, state, tokens):
            logits, state = self.model.decode_step(prev, state)
            log_probs = tf.nn.log_softmax(logits)
            ids = tf.argmax(log_probs, axis=-1, output_type=tf.int32)
            best = tf.reduce_max(log_probs, axis=-1)
            score += tf.where(finished, 0.0, best)
            ids = tf.where(finished, PAD, ids)
            return t + 1, ids, finished | tf.equal(ids, EOS), score, state, tokens.write(t, ids)

        init = (tf.constant(0), tf.fill([batch], BOS), tf.zeros([batch], tf.bool), tf.zeros([batch]),
                state, tokens)
        _, _, _, score, _, tokens = tf.while_loop(cond, body, init)
        ids = tf.transpose(tokens.stack(), [1, 0])
        ids = tf.reshape(ids, [batch, -1])
        return ids, score


def strip_ids(row):
    """Token ids up to (not including) the first EOS, without padding."""
    out = []
    for i in row:
        if i == EOS:
            break
        if i != PAD:
            out.append(int(i))
    return out
