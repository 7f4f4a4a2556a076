"""The plain Keras 3 model anyone could write, trained with `model.fit` for a number of minutes.

    python benchmarks/keras_baseline.py --data DATA --max-minutes 20 --test-src test.es --out hyp.en

A biLSTM encoder (Keras' Bidirectional(LSTM), 256 per direction), an LSTM(512) decoder over the whole
target (teacher forcing, no input feeding) started from the encoder's final states, Keras' dot-product
`Attention` after it, a tanh combination layer and a Dense output over the vocabulary; Adam 2e-3 with
global_clipnorm 1, batches from `bucket_by_sequence_length` of about 1,600 target tokens. It reads mt's
prepared data folder (the same SentencePiece pieces as mt) and decodes the test source greedily.
Prints one JSON line: steps, training seconds, target tokens/s.

`--output-bias unigram` (the default) starts the output layer's bias at the log frequencies of the target
pieces, as mt does; `zeros` is Keras' own initialization. With zeros the model stays on the unigram
plateau of docs/design.md for its whole budget: after 1,486 updates (20 minutes) it still wrote commas only
(BENCHMARKS.md, "The Keras baseline's unigram plateau").
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402

from mt.data import unigram_log_probs  # noqa: E402
from mt.folders import DataFolder  # noqa: E402
from mt.tokenizer import Tokenizer  # noqa: E402

EMB, ENC, DEC, MAX_LEN = 256, 256, 512, 80
BOS, EOS = Tokenizer.BOS, Tokenizer.EOS


def build(src_vocab, tgt_vocab):
    src, tgt = keras.Input((None,), dtype="int32"), keras.Input((None,), dtype="int32")
    enc_emb = layers.Embedding(src_vocab, EMB, mask_zero=True)(src)
    enc_out, fh, fc, bh, bc = layers.Bidirectional(layers.LSTM(ENC, return_sequences=True, return_state=True))(enc_emb)
    bridge_h, bridge_c = layers.Dense(DEC, activation="tanh"), layers.Dense(DEC, activation="tanh")
    init = [bridge_h(layers.Concatenate()([fh, bh])), bridge_c(layers.Concatenate()([fc, bc]))]
    dec_emb_layer = layers.Embedding(tgt_vocab, EMB, mask_zero=True)
    dec_lstm = layers.LSTM(DEC, return_sequences=True, return_state=True)
    attention, combine = layers.Attention(), layers.Dense(DEC, activation="tanh")
    project, output = layers.Dense(DEC, use_bias=False), layers.Dense(tgt_vocab)
    keys = project(enc_out)

    def decode(tgt_ids, state, keys, memory, memory_mask):
        dec_out, h, c = dec_lstm(dec_emb_layer(tgt_ids), initial_state=state)
        context = attention([dec_out, memory, keys], mask=[None, memory_mask])
        return output(combine(layers.Concatenate()([dec_out, context]))), [h, c]

    src_mask = keras.ops.not_equal(src, 0)
    logits, _ = decode(tgt, init, keys, enc_out, src_mask)
    model = keras.Model([src, tgt], logits)
    encoder = keras.Model(src, [enc_out, keys, *init])
    memory_in, keys_in = keras.Input((None, 2 * ENC)), keras.Input((None, DEC))
    mask_in, step_in = keras.Input((None,), dtype="bool"), keras.Input((1,), dtype="int32")
    h_in, c_in = keras.Input((DEC,)), keras.Input((DEC,))
    step_logits, (h, c) = decode(step_in, [h_in, c_in], keys_in, memory_in, mask_in)
    step = keras.Model([step_in, h_in, c_in, keys_in, memory_in, mask_in], [step_logits, h, c])
    return model, encoder, step


def dataset(folder, split, repeat):
    src, tgt = folder.read_split(split)
    keep = [i for i in range(len(src)) if 0 < len(src[i]) <= MAX_LEN and 0 < len(tgt[i]) <= MAX_LEN]

    def pairs():
        order = np.random.default_rng(len(keep)).permutation(keep) if repeat else keep
        for i in order:
            t = tgt[i].tolist()
            yield src[i], [BOS] + t, t + [EOS]

    spec = tuple(tf.TensorSpec([None], tf.int32) for _ in range(3))
    data = tf.data.Dataset.from_generator(pairs, output_signature=spec)
    if repeat:
        data = data.repeat()
    bounds = list(range(8, MAX_LEN + 2, 8))
    sizes = [max(1, 1600 // b) for b in bounds] + [max(1, 1600 // (MAX_LEN + 1))]
    data = data.bucket_by_sequence_length(lambda s, ti, to: tf.shape(to)[0], bounds, sizes)
    return data.map(lambda s, ti, to: ((s, ti), to, tf.cast(to > 0, tf.float32))).prefetch(2)


class Budget(keras.callbacks.Callback):
    """Stops fit after `minutes` of training or `max_steps` updates, counting the updates."""

    def __init__(self, minutes, max_steps=0):
        super().__init__()
        self.seconds, self.max_steps, self.steps, self.start = minutes * 60, max_steps, 0, None

    def on_train_batch_begin(self, batch, logs=None):
        self.start = self.start or time.time()

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps >= self.max_steps if self.max_steps else time.time() - self.start >= self.seconds:
            self.model.stop_training = True


def greedy(encoder, step, src_tokenizer, tgt_tokenizer, lines, batch=64):
    out = [""] * len(lines)
    encoded = src_tokenizer.encode(lines)
    order = sorted(range(len(lines)), key=lambda i: len(encoded[i]))
    step_fn = tf.function(lambda *a: step(list(a)))
    for k in range(0, len(order), batch):
        rows = order[k:k + batch]
        src = np.zeros((len(rows), max(1, max(len(encoded[i][:MAX_LEN]) for i in rows))), np.int32)
        for r, i in enumerate(rows):
            src[r, :len(encoded[i][:MAX_LEN])] = encoded[i][:MAX_LEN]
        memory, keys, h, c = encoder(src)
        ids, mask, done = np.full((len(rows), 1), BOS, np.int32), src != 0, np.zeros(len(rows), bool)
        result = [[] for _ in rows]
        for _ in range(2 * src.shape[1] + 10):
            logits, h, c = step_fn(ids, h, c, keys, memory, mask)
            ids = np.argmax(logits.numpy()[:, -1], axis=-1).astype(np.int32)[:, None]
            for r, token in enumerate(ids[:, 0]):
                if not done[r]:
                    done[r] = token == EOS
                    if not done[r]:
                        result[r].append(int(token))
            if done.all():
                break
        for r, i in enumerate(rows):
            out[i] = tgt_tokenizer.decode([result[r]])[0]
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--max-minutes", type=float, default=20)
    parser.add_argument("--max-steps", type=int, default=0, help="stop after this many updates instead")
    parser.add_argument("--test-src", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--output-bias", choices=("unigram", "zeros"), default="unigram",
                        help="the output layer's initial bias: log target frequencies, or Keras' zeros")
    args = parser.parse_args()
    keras.utils.set_random_seed(42)
    folder = DataFolder(args.data)
    src_vocab, tgt_vocab = folder.vocab_sizes()
    model, encoder, step = build(src_vocab, tgt_vocab)
    if args.output_bias == "unigram":
        model.layers[-1].bias.assign(unigram_log_probs(folder.read_split("train")[1], tgt_vocab).astype(np.float32))
    model.compile(keras.optimizers.Adam(2e-3, global_clipnorm=1.0),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), weighted_metrics=[])
    budget = Budget(args.max_minutes, args.max_steps)
    history = model.fit(dataset(folder, "train", repeat=True), epochs=1, steps_per_epoch=10 ** 7,
                        callbacks=[budget], verbose=2)
    seconds = time.time() - budget.start
    # the real target tokens of the batches trained on: the same batches, in the same order, counted
    tokens = sum(float(tf.reduce_sum(w)) for _, _, w in dataset(folder, "train", repeat=True).take(budget.steps))
    with open(args.test_src, encoding="utf-8") as f:
        lines = [line.strip() for line in f.read().splitlines()]
    start = time.time()
    hyps = greedy(encoder, step, Tokenizer(folder.tokenizer_path("src")), Tokenizer(folder.tokenizer_path("tgt")),
                  lines)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("".join(h.replace("\n", " ") + "\n" for h in hyps))
    print(json.dumps({"steps": budget.steps, "train_seconds": seconds, "tokens_per_s": tokens / seconds,
                      "mean_loss": float(history.history["loss"][-1]),
                      "decode_seconds": time.time() - start}))


if __name__ == "__main__":
    main()
