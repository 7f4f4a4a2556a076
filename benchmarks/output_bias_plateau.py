"""The unigram plateau: the training loss of the first updates, by the output layer's initial bias.

    python benchmarks/output_bias_plateau.py --data DATA --updates 150

Each variant trains from the same seed on the same batches (benchmarks/keras_baseline.py's
`bucket_by_sequence_length` batches of mt's prepared data), with one plain loop: Adam 2e-3, gradients
clipped to global norm 1. Variants: the Keras baseline's model with Keras' zero output bias and with the
bias at the log target frequencies, and mt's default model (input feeding, dropout 0.1) with a zero bias.
The loss is the mean over each window of updates, per real target token. Prints one table.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_baseline  # noqa: E402
from mt.config import ModelConfig  # noqa: E402
from mt.data import unigram_log_probs  # noqa: E402
from mt.folders import DataFolder  # noqa: E402
from mt.model import build_model  # noqa: E402


def losses(model, batches):
    optimizer = keras.optimizers.Adam(2e-3)

    @tf.function(reduce_retracing=True)
    def update(src, tgt_in, tgt_out, weight):
        with tf.GradientTape() as tape:
            nll = tf.nn.sparse_softmax_cross_entropy_with_logits(tgt_out, model((src, tgt_in), training=True))
            loss = tf.reduce_sum(nll * weight) / tf.reduce_sum(weight)
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, model.trainable_variables)]
        optimizer.apply(tf.clip_by_global_norm(grads, 1.0)[0], model.trainable_variables)
        return loss

    return [float(update(src, tgt_in, tgt_out, weight)) for (src, tgt_in), tgt_out, weight in batches]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--updates", type=int, default=150)
    parser.add_argument("--window", type=int, default=25)
    args = parser.parse_args()
    folder = DataFolder(args.data)
    src_vocab, tgt_vocab = folder.vocab_sizes()
    batches = list(keras_baseline.dataset(folder, "train", repeat=True).take(args.updates))
    bias = unigram_log_probs(folder.read_split("train")[1], tgt_vocab).astype(np.float32)
    rows = {}
    for name in ("Keras model, zero bias", "Keras model, unigram bias", "mt default model, zero bias"):
        keras.utils.set_random_seed(1)
        if name.startswith("mt"):
            model = build_model(ModelConfig(), src_vocab, tgt_vocab)
            model.output_layer.bias.assign(np.zeros(tgt_vocab, np.float32))
        else:
            model = keras_baseline.build(src_vocab, tgt_vocab)[0]
            if "unigram" in name:
                model.layers[-1].bias.assign(bias)
        found = losses(model, batches)
        rows[name] = [np.mean(found[k:k + args.window]) for k in range(0, len(found), args.window)]
        print(name, " ".join(f"{x:.2f}" for x in rows[name]), file=sys.stderr, flush=True)
    ends = [min(k + args.window, args.updates) for k in range(0, args.updates, args.window)]
    print("| variant | " + " | ".join(f"updates {k - args.window + 1}-{k}" for k in ends) + " |")
    print("|---|" + "---:|" * len(ends))
    for name, means in rows.items():
        print(f"| {name} | " + " | ".join(f"{x:.2f}" for x in means) + " |")


if __name__ == "__main__":
    main()
