"""`mt lm sample`: text drawn from a language model, by the compiled searches of mt/search.py.

The prime (or, without one, a newline) is read from the zero state; the search then extends it one
character a step inside one compiled loop: sampling (temperature, top-k, top-p, a seed: the same seed
gives the same text) or, with --argmax, greedy search, which always takes the most probable character
and so falls into the repetition loops that make sampling worth having.
"""

import sys

import numpy as np

from mt.errors import UserError
from mt.search_options import SearchOptions
from mt.tokenizer import UNK

NEG_INF = -1e9  # as mt/model.py's, without importing TensorFlow here


def sample_text(model, vocab, prime, length, options):
    """The `length` characters (ids: bytes for a byte vocabulary) that the search of `options` (a
    SearchOptions: greedy or sample) continues `prime` with, as text."""
    import tensorflow as tf

    from mt.search import build_search

    ids = vocab.encode(prime) if prime else np.array([vocab.id_of("\n")], np.int32)
    state = model.zero_state(1)
    if len(ids) > 1:
        _, state = model.run(tf.constant(ids[None, :-1]), state)
    start = model.search_state(state, ids[-1:])
    search = build_search(options, scores=False)
    # a sample is text: UNK, which only a held-out text needs, is never drawn
    unknown = np.zeros([vocab.size], np.float32)
    unknown[UNK] = NEG_INF

    def draw(start):
        step = model.step_function()

        def known(ids, state):
            logits, state, attention = step(ids, state)
            return logits + unknown, state, attention

        return search(known, start, tf.constant([length], tf.int32)).ids

    found = tf.function(draw, autograph=False)(start)
    return vocab.decode(found.numpy()[0, 0])


def run(model, prime, length, temperature, argmax, top_k, top_p, seed, weights="best"):
    """`mt lm sample`: write PRIME and its continuation to stdout."""
    from mt.lm.model import load_model

    if length < 1:
        raise UserError(f"--length must be at least 1, got {length}")
    options = SearchOptions(search="greedy" if argmax else "sample", temperature=temperature, top_k=top_k,
                            top_p=top_p, seed=seed).check()
    lm, vocab, _ = load_model(model, weights)
    text = sample_text(lm, vocab, prime or "", length, options)
    sys.stdout.write((prime or "") + text + ("" if text.endswith("\n") else "\n"))
    sys.stdout.flush()
    return text
