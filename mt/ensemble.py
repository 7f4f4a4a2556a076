"""Several models decoding as one: at every step, the mean of their log-probabilities.

    ensemble = Ensemble([model_a, model_b])
    state = ensemble.encode(src)                  -> a tuple of the models' DecoderStates
    step = ensemble.step_function()               -> step(ids, state) -> (log-probabilities, state, attention)

An `Ensemble` has the part of the model interface that decoding uses (`encode`, `step_function`,
`attention`, `tgt_vocab`), so `Translator`, every search and `mt score` take it where they take one model,
and the whole ensemble runs inside the same compiled search. Its step returns the mean over the models of
their log-softmax, [R, V]; the search treats that as logits and normalizes it with its log-sum-exp as
usual, so the ensemble's distribution is the normalized geometric mean of the models' distributions. The
step's attention is the mean of the models' attentions when every model has attention, else None.

The models must share the target vocabulary (the mean is taken piece by piece) and read the same source
pieces (one source mask serves the attention of all of them): `load_translator` checks that the run folders
hold the same tokenizers.
"""

from mt.errors import UserError


class Ensemble:
    """Models that decode together, their log-probabilities averaged at every step."""

    def __init__(self, models):
        self.models = tuple(models)
        if not self.models:
            raise ValueError("an ensemble needs at least one model")
        first = self.models[0]
        for other in self.models[1:]:
            if other.tgt_vocab != first.tgt_vocab:
                raise UserError(f"the models of an ensemble need one target vocabulary: one has "
                                f"{first.tgt_vocab} pieces, another {other.tgt_vocab}")
        self.src_vocab, self.tgt_vocab = first.src_vocab, first.tgt_vocab

    def __len__(self):
        return len(self.models)

    @property
    def attention(self):
        """Every model attends to the source, so the ensemble's step has an attention."""
        return all(m.attention for m in self.models)

    def encode(self, src, training=False, longest_first=False):
        """src [B, S] -> the tuple of every model's initial DecoderState."""
        return tuple(m.encode(src, training=training, longest_first=longest_first) for m in self.models)

    def step_function(self):
        """One search step over the tuple of the models' states, each model's weights cast once, now."""
        import tensorflow as tf

        steps = [m.step_function() for m in self.models]
        count = float(len(steps))
        with_attention = self.attention

        def step(ids, states):
            results = [fn(ids, state) for fn, state in zip(steps, states)]
            log_probs = tf.add_n([tf.nn.log_softmax(tf.cast(logits, tf.float32)) for logits, _, _ in results])
            attention = None
            if with_attention:
                attention = tf.add_n([tf.cast(a, tf.float32) for _, _, a in results]) / count
            return log_probs / count, tuple(new for _, new, _ in results), attention

        return step
