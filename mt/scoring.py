"""`mt score`: forced decoding. The model's log-probability of given target sentences, piece by piece.

    mt score --model RUN --src test.es --tgt test.en [--per-token]

One output line per pair, in input order, tab-separated:
    TOTAL    COUNT    [PIECE_SCORES]
TOTAL is the log-probability of the target's pieces, EOS included; COUNT the number of those pieces; with
--per-token, PIECE_SCORES lists each piece's log-probability, space-separated. A pair whose source line is
empty scores 0 over 0 pieces (translation leaves such a line empty too).

The scores are those a search assigns: the model's (or an ensemble's) search step runs over the target,
fed the target's previous piece instead of its own choice, inside one compiled loop per batch, and each
piece scores its logit minus the log-sum-exp of the step's logits, as in mt/search.py. Pairs are batched
by source length as in translation, the rows of a batch longest first for the encoder.
"""

import sys

import click
import numpy as np

from mt.errors import UserError
from mt.tokenizer import BOS, PAD


def forced_log_probs(model, src, tgt_out):
    """src [B, S] int32, rows sorted by length, longest first; tgt_out [B, T] int32, each target's pieces
    and EOS, padded with PAD -> [B, T] float32, the log-probability of every target piece (0 on padding).
    `model` is anything with the decoding interface of Seq2Seq (an Ensemble too)."""
    import tensorflow as tf

    state = model.encode(src, longest_first=True)
    step = model.step_function()
    batch, steps = tf.shape(tgt_out)[0], tf.shape(tgt_out)[1]
    targets = tf.transpose(tgt_out)  # [T, B]
    previous = tf.concat([tf.fill([1, batch], BOS), targets[:-1]], 0)

    def body(t, state, scores):
        logits, state, _ = step(previous[t], state)
        logits = tf.cast(logits, tf.float32)
        # the search's score of a token: its logit minus the log-sum-exp of the step's logits
        picked = tf.gather(logits, targets[t][:, None], batch_dims=1)[:, 0] - tf.reduce_logsumexp(logits, -1)
        return t + 1, state, scores.write(t, picked)

    _, _, scores = tf.while_loop(lambda t, state, scores: t < steps, body,
                                 (tf.constant(0), state, tf.TensorArray(tf.float32, size=steps)))
    return tf.where(tf.not_equal(tgt_out, PAD), tf.transpose(scores.stack()), 0.0)


class Scorer:
    """Forced decoding with a Translator's model (or ensemble) and tokenizers, one compiled call a batch."""

    def __init__(self, translator):
        import tensorflow as tf

        self.translator = translator
        spec = [tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, None], tf.int32)]
        # autograph off: the loop is a tf.while_loop already (see Translator.search)
        self._score = tf.function(lambda src, tgt: forced_log_probs(translator.model, src, tgt),
                                  input_signature=spec, autograph=False)

    def score(self, sources, targets, batch_size=64, batch_type="sents"):
        """For every (source, target) pair of the two lists of strings, the log-probabilities of the
        target's pieces, EOS included, as a float32 array (empty for an empty source), in input order."""
        from mt.data import pad_sources
        from mt.tokenizer import EOS
        from mt.translate import make_batches

        if len(sources) != len(targets):
            raise UserError(f"{len(sources)} source lines and {len(targets)} target lines: score needs one "
                            "target line for every source line")
        encoded = self.translator._encode(sources)
        wanted = [ids + [EOS] for ids in self.translator.tgt_tok.encode(targets)]
        results = [np.zeros([0], np.float32) for _ in sources]
        for batch in make_batches([len(e) for e in encoded], batch_size, batch_type):
            batch = sorted(batch, key=lambda i: -len(encoded[i]))  # longest first, for the encoder
            out = self._score(pad_sources([encoded[i] for i in batch]), pad_sources([wanted[i] for i in batch]))
            out = out.numpy()
            for row, i in enumerate(batch):
                results[i] = out[row, :len(wanted[i])]
        return results


def format_scores(scores, per_token=False):
    """Output lines (see the module docstring) for a list of per-piece score arrays."""
    lines = []
    for pieces in scores:
        line = f"{float(np.sum(pieces, dtype=np.float64)):.4f}\t{len(pieces)}"
        if per_token:
            line += "\t" + " ".join(f"{float(x):.4f}" for x in pieces)
        lines.append(line + "\n")
    return "".join(lines)


def run(model, src, tgt, per_token, output, batch_size, batch_type, weights, precision="auto"):
    """`mt score`: score the pairs of SRC and TGT with the run folder(s) MODEL, to OUTPUT or stdout."""
    from mt.atomic import atomic_open
    from mt.textio import read_lines
    from mt.translate import load_translator, read_source

    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    sources = read_source(src)
    targets = [line.strip() for line in read_lines(tgt)]
    if len(sources) != len(targets):
        raise UserError(f"--src has {len(sources)} lines and --tgt {len(targets)}: they must be aligned, one "
                        "pair a line")
    scorer = Scorer(load_translator(model, weights, precision))
    text = format_scores(scorer.score(sources, targets, batch_size, batch_type), per_token)
    if output:
        with atomic_open(output) as f:
            f.write(text)
        click.echo(f"scored {len(sources)} pairs -> {output}", err=True)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
