"""The compiled training step of `mt lm train` in variants, and a plain Keras model's `train_on_batch` of
the same size, taking turns in one process: milliseconds of wall and CPU time per update (medians).

    python benchmarks/lm_step.py --text work/linux-c/corpus/train.txt --variants mt,autodiff,widened,keras \
        --units 256 --layers 2 --batch 64 --bptt 100 --rounds 8

Variants:
    mt        the step as it is (the recurrent kernels' gradients after the loop, kernels widened only
              where the CPU lacks AVX-512)
    autodiff  the recurrent kernels' gradients by autodiff inside the loop
    widened   the recurrent kernels widened by 16 zero columns, as on CPUs without AVX-512
    keras     Keras' LSTM(stateful=True) layers of the same sizes in float32, `train_on_batch` (as
              benchmarks/keras_lm_baseline.py builds them, without dropout)
All mt variants run on the same streams from the same weights (updates at a tiny learning rate); CPU time
is the process's, so other work on a shared machine inflates wall time more than CPU time.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mt.runtime import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import mt.lm.model as lm_model  # noqa: E402
from mt.folders import LMRunFolder  # noqa: E402
from mt.lm.streams import read_texts  # noqa: E402
from mt.lm.train import LMTrainer, configured  # noqa: E402

FLAGS = {"mt": {}, "autodiff": {"recurrent_taps": False}, "widened": {"wide": False}}


def traced(trainer, inputs, targets, variant):
    """The trainer's step compiled with the variant's switches in place while it is traced."""
    flags = FLAGS[variant]
    taps, wide = lm_model.LanguageModel.recurrent_taps, lm_model.WIDE_PRODUCTS_RUN_FULL
    step = tf.function(trainer._train_step, autograph=False)
    lm_model.LanguageModel.recurrent_taps = flags.get("recurrent_taps", taps)
    lm_model.WIDE_PRODUCTS_RUN_FULL = flags.get("wide", wide)
    try:
        step(inputs, targets, tf.constant(1e-6))
    finally:
        lm_model.LanguageModel.recurrent_taps, lm_model.WIDE_PRODUCTS_RUN_FULL = taps, wide
    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--text", required=True)
    parser.add_argument("--chars", type=int, default=2_000_000, help="characters of --text to use")
    parser.add_argument("--variants", default="mt,autodiff,widened,keras")
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--bptt", type=int, default=100)
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="updates per variant and round")
    args = parser.parse_args()
    texts = read_texts([args.text])
    texts.text = texts.text[:args.chars]
    cfg = configured(None, {"precision": args.precision})
    cfg.model.units, cfg.model.layers, cfg.train.batch_size, cfg.train.bptt = args.units, args.layers, args.batch, args.bptt
    trainer = LMTrainer(cfg, texts, None, LMRunFolder(tempfile.mkdtemp(prefix="lm-step-")))
    trainer._restore()
    windows = [trainer.streams.window_at(c) for c in range(min(trainer.streams.chunks, 50))]
    steps = {}
    for variant in args.variants.split(","):
        if variant in FLAGS:
            step = traced(trainer, *windows[0], variant)
            steps[variant] = lambda i, step=step: float(step(*windows[i % len(windows)], tf.constant(1e-6))[0])
        elif variant == "keras":
            model = keras_model(cfg, trainer.vocab.size)
            model.train_on_batch(*windows[0])
            steps[variant] = lambda i, model=model: model.train_on_batch(*windows[i % len(windows)])
        else:
            sys.exit(f"error: unknown variant {variant!r}: choose among mt, autodiff, widened, keras")
    wall = {name: [] for name in steps}
    cpu = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            started, used = time.time(), time.process_time()
            for i in range(args.steps):
                step(i)
            wall[name].append((time.time() - started) / args.steps)
            cpu[name].append((time.process_time() - used) / args.steps)
    chars = args.batch * args.bptt
    print(f"{args.layers} x {args.units} LSTM, {args.batch} x {args.bptt} characters an update, {args.precision}, "
          f"{args.rounds} rounds of {args.steps} updates")
    print("| variant | wall ms/update | CPU ms/update | chars/s (wall) |")
    print("|---|---:|---:|---:|")
    for name in steps:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(f"| {name} | {w * 1000:.0f} | {c * 1000:.0f} | {chars / w:,.0f} |")


def keras_model(cfg, vocab_size):
    """Keras' stateful LSTMs at the config's sizes, compiled as benchmarks/keras_lm_baseline.py does."""
    layers = keras.layers
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")  # the plain model's own precision
    ids = keras.Input(batch_shape=(cfg.train.batch_size, cfg.train.bptt), dtype="int32")
    x = layers.Embedding(vocab_size, cfg.model.emb_dim)(ids)
    for _ in range(cfg.model.layers):
        x = layers.LSTM(cfg.model.units, return_sequences=True, stateful=True)(x)
    model = keras.Model(ids, layers.Dense(vocab_size)(x))
    model.compile(keras.optimizers.Adam(cfg.train.learning_rate, global_clipnorm=cfg.train.clip_norm),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    keras.mixed_precision.set_global_policy(policy)
    return model


if __name__ == "__main__":
    main()
