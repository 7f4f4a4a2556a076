"""The plain Keras 3 character language model anyone could write, trained with `model.fit` for a number
of minutes, then measured on held-out text.

    python benchmarks/keras_lm_baseline.py --train train.txt --test test.txt --minutes 10 [--config CONFIG]

Keras' own layers at the sizes of an `mt lm` config (default: mt's defaults): Embedding, a stack of
`LSTM(stateful=True, return_sequences=True)` (GRU or SimpleRNN for those cells), Dropout where the config
has it, a Dense output over the vocabulary; Adam at the config's rate with global_clipnorm at its clip
norm; sparse categorical cross-entropy from logits. The text is mt's (the same vocabulary, the same
batch_size parallel streams of mt/lm/streams.py, bptt characters a batch, in order, so that a stateful
layer carries each stream's state from batch to batch; the states are reset when an epoch starts again).
`model.fit(shuffle=False)` runs until the minutes are up. Held-out bits per character are measured as
`mt lm evaluate` measures them (the same rows and chunks), with a stateful copy of the model. Prints one
JSON line.
"""

import argparse
import json
import math
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mt.runtime import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

from mt.lm.config import LMConfig  # noqa: E402
from mt.lm.streams import TrainStreams, eval_rows, read_texts  # noqa: E402
from mt.lm.vocab import Vocabulary  # noqa: E402

LOG_EVERY = 50  # batches per speed window
EVAL_STREAMS = 64  # as `mt lm evaluate`'s default


def build(cfg, vocab_size, batch, length):
    """The stateful model for batches [batch, length]."""
    recurrent = {"lstm": layers.LSTM, "gru": layers.GRU, "rnn": layers.SimpleRNN}[cfg.model.cell]
    ids = keras.Input(batch_shape=(batch, length), dtype="int32")
    x = layers.Embedding(vocab_size, cfg.model.emb_dim)(ids)
    for _ in range(cfg.model.layers):
        if cfg.model.dropout:
            x = layers.Dropout(cfg.model.dropout)(x)
        x = recurrent(cfg.model.units, return_sequences=True, stateful=True)(x)
    if cfg.model.dropout:
        x = layers.Dropout(cfg.model.dropout)(x)
    return keras.Model(ids, layers.Dense(vocab_size)(x))


def reset(model):
    for layer in model.layers:
        if getattr(layer, "stateful", False):
            layer.reset_states()


class Budget(keras.callbacks.Callback):
    """Stops training when the minutes are up; resets the states when an epoch starts; times windows of
    LOG_EVERY batches."""

    def __init__(self, minutes, chars_per_batch):
        super().__init__()
        self.seconds, self.chars_per_batch = 60.0 * minutes, chars_per_batch
        self.batches, self.windows, self.losses = 0, [], []

    def on_train_begin(self, logs=None):
        self.start = self.window = time.time()

    def on_epoch_begin(self, epoch, logs=None):
        reset(self.model)

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))
        now = time.time()
        if self.batches % LOG_EVERY == 0:
            self.windows.append(LOG_EVERY * self.chars_per_batch / (now - self.window))
            self.window = now
        if now - self.start >= self.seconds:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        self.elapsed = time.time() - self.start


def held_out_bits(model, cfg, vocab, text, batch):
    """Bits per character of `text` under the trained model, read as `mt lm evaluate` reads it."""
    chunk = cfg.train.eval_chunk
    inputs, targets, predictions = eval_rows(vocab.encode(text), EVAL_STREAMS, chunk)
    reader = build(cfg, vocab.size, inputs.shape[0], chunk)
    reader.set_weights(model.get_weights())
    reset(reader)
    nats = 0.0
    for start in range(0, inputs.shape[1], chunk):
        logits = np.asarray(reader.predict_on_batch(inputs[:, start:start + chunk]), np.float64)
        logits = logits - logits.max(axis=-1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
        y = targets[:, start:start + chunk]
        picked = np.take_along_axis(log_probs, y[..., None], axis=-1)[..., 0]
        nats -= float((picked * (y != 0)).sum())
    return nats / math.log(2.0) / max(len(text) - 1, 1), predictions


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", required=True, nargs="+")
    parser.add_argument("--test", required=True, nargs="+")
    parser.add_argument("--minutes", type=float, required=True)
    parser.add_argument("--config", help="an mt lm config (path or shipped name) giving the sizes")
    args = parser.parse_args()
    cfg = LMConfig.load(args.config)
    keras.utils.set_random_seed(cfg.train.seed)
    train = read_texts(args.train)
    vocab = Vocabulary.build(cfg.model.vocab, train.text, cfg.model.min_count)
    tc = cfg.train
    streams = TrainStreams(vocab.encode(train.text), tc.batch_size, tc.bptt, tc.bptt)
    # batch c x B + b is chunk c of stream b, so that row b of every batch continues row b of the one before
    x = np.concatenate([streams.window_at(c)[0] for c in range(streams.chunks)])
    y = np.concatenate([streams.window_at(c)[1] for c in range(streams.chunks)])
    model = build(cfg, vocab.size, tc.batch_size, tc.bptt)
    model.compile(keras.optimizers.Adam(tc.learning_rate, global_clipnorm=tc.clip_norm),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    budget = Budget(args.minutes, tc.batch_size * tc.bptt)
    model.fit(x, y, batch_size=tc.batch_size, shuffle=False, epochs=10 ** 6, verbose=0, callbacks=[budget])
    bits, predictions = held_out_bits(model, cfg, vocab, read_texts(args.test).text, tc.batch_size)
    chars = budget.batches * tc.batch_size * tc.bptt
    print(json.dumps({
        "name": "plain Keras", "precision": keras.mixed_precision.global_policy().name,
        "parameters": model.count_params(), "steps": budget.batches, "chars": chars,
        "train_seconds": budget.elapsed, "chars_per_s": chars / budget.elapsed,
        "chars_per_s_median": statistics.median(budget.windows[1:] or budget.windows or [0.0]),
        "mean_loss_last_window": statistics.mean(budget.losses[-LOG_EVERY:]) if budget.losses else None,
        "bits_per_char": bits, "predictions": predictions}))


if __name__ == "__main__":
    main()
