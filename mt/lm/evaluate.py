"""`mt lm evaluate`: bits per character of a language model on held-out text.

The text is read as `--streams` parallel rows (mt/lm/streams.py: eval_rows), each from the zero state,
`train.eval_chunk` characters at a time with the state carried; every character but the first is
predicted once. Bits per character are the summed negative log2-probabilities over the number of
predictions; perplexity is 2 to that power. Validation during training measures the dev text the same way.
"""

import json
import math

import click

LN2 = math.log(2.0)


class RowScorer:
    """The summed negative log-likelihood (nats) and the number of predictions of rows of ids, read
    `chunk` at a time with the state carried; one compiled function per model and chunk length."""

    def __init__(self, model, chunk):
        import tensorflow as tf

        self.model, self.chunk = model, chunk
        ids = tf.TensorSpec([None, chunk], tf.int32)
        state = tuple(tuple(tf.TensorSpec([None, cell.units], tf.float32) for _ in range(cell.state_size))
                      for cell in model.cells)
        self.score_chunk = tf.function(self._chunk, input_signature=[ids, ids, state], autograph=False)

    def _chunk(self, inputs, targets, state):
        import tensorflow as tf

        outputs, state = self.model.run(inputs, state)
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=self.model.logits(outputs))
        real = tf.cast(tf.not_equal(targets, 0), tf.float32)
        return tf.reduce_sum(nll * real), tf.reduce_sum(real), state

    def __call__(self, inputs, targets):
        """(nats, predictions) over rows inputs, targets [S, C x chunk] (targets PAD where padding)."""
        state = self.model.zero_state(inputs.shape[0])
        nats = count = 0.0
        for start in range(0, inputs.shape[1], self.chunk):
            part = slice(start, start + self.chunk)
            loss, real, state = self.score_chunk(inputs[:, part], targets[:, part], state)
            nats, count = nats + float(loss), count + float(real)
        return nats, count


def run(model, text, weights="best", streams=64, as_json=False):
    """`mt lm evaluate`: bits per character of the run folder MODEL's model on the files TEXT."""
    from mt.errors import UserError
    from mt.lm.model import load_model
    from mt.lm.streams import eval_rows, read_texts

    if streams < 1:
        raise UserError(f"--streams must be at least 1, got {streams}")
    texts = read_texts(text)  # before the model: a missing text costs no loading
    lm, vocab, folder = load_model(model, weights)
    ids = vocab.encode(texts.text)
    chunk = folder.load_config().train.eval_chunk
    inputs, targets, predictions = eval_rows(ids, streams, chunk)
    nats, count = RowScorer(lm, chunk)(inputs, targets)
    bits = nats / LN2
    result = {"bits_per_char": bits / max(len(texts.text) - 1, 1), "perplexity": 2.0 ** (bits / max(count, 1.0)),
              "predictions": int(count), "characters": len(texts.text), "unknown": vocab.unknown(ids),
              "vocab": vocab.kind, "text": [f["path"] for f in texts.files], "model": str(model)}
    if vocab.kind == "byte":
        result["bits_per_byte"] = bits / max(count, 1.0)
    if as_json:
        click.echo(json.dumps(result))
    else:
        per_byte = f" ({result['bits_per_byte']:.4f} bits per byte)" if vocab.kind == "byte" else ""
        unknown = f" | {result['unknown']:,} unknown to the model's vocabulary" if result["unknown"] else ""
        click.echo(f"bits per character {result['bits_per_char']:.4f}{per_byte} | perplexity "
                   f"{result['perplexity']:.3f} | {result['characters']:,} characters{unknown}")
    return result
