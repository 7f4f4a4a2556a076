"""Training throughput: target tokens/s of mt's real training step, variants side by side in one process.

A variant is a precision, optionally with a number of data-parallel CPU replicas after '@'
(`float32`, `mixed_bfloat16`, `float32@2`: MirroredStrategy over 2 logical CPU devices). For each variant
the script builds a Trainer on the prepared data, takes the same first N global batches, and times the
compiled training step on them; variants take turns, several rounds, and the median is reported, so that
a busy machine slows all of them alike. It also measures the machine's matrix-multiply peak (float32 and
bfloat16) in the same run and reports the achieved arithmetic rate from an analytic count of the model's
FLOPs per target token (forward + backward = 3 x forward matrix products). The peak is measured after every
round and its median used, so that a machine that is busier at some moments than at others weighs on the
peak as on the training.

    python benchmarks/train_speed.py --data work/bible/data --config rnn-base-cpu \
        --variants float32,mixed_bfloat16 --batches 8 --rounds 3
    python benchmarks/train_speed.py --data work/bible/data --config rnn-base-cpu \
        --variants float32,float32@2 --batches 8 --rounds 3

A variant ending in `/untapped` differentiates the attention through the decoder's time loop, as autodiff
does, instead of handing its gradients out through taps (`mt.model.attention_taps`):
    python benchmarks/train_speed.py --data work/bible/data --variants float32/untapped,float32 --rounds 6

A variant ending in `/loop` runs teacher forcing step by step even for a model without input feeding,
where it otherwise runs the attention over all steps at once (`Seq2Seq.parallel_teacher_forcing`):
    python benchmarks/train_speed.py --data work/bible/data --config unfed.yaml --variants float32/loop,float32

A variant ending in `/narrow` multiplies by the loops' kernels as they are, not widened (`mt.model.widen`):
    python benchmarks/train_speed.py --data work/bible/data --variants float32/narrow,float32
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mt.model import WIDEN_MULTIPLE  # noqa: E402  (the /narrow variants change it while they trace)


def matmul_peak(dtype_name, size=2000, seconds=2.0):
    """GFLOP/s of one large square matrix product, the machine's practical peak for that dtype.

    The size is not a multiple of 512: on AVX2 CPUs oneDNN multiplies by such matrices more slowly (see
    benchmarks/matmul_widths.py), and the peak is the best rate the machine reaches."""
    import tensorflow as tf

    dtype = getattr(tf, dtype_name)
    a = tf.cast(tf.random.normal([size, size]), dtype)
    b = tf.cast(tf.random.normal([size, size]), dtype)
    run = tf.function(lambda x, y: tf.matmul(x, y))
    run(a, b).numpy()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        out = run(a, b)
        count += 1
    out.numpy()
    return 2 * size ** 3 * count / (time.perf_counter() - start) / 1e9


def flops_per_target_token(model_cfg, src_vocab, tgt_vocab, src_per_tgt):
    """Forward matrix-product FLOPs per target token (multiply-add = 2), encoder work included."""
    c = model_cfg
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[c.cell]
    enc, dec, mem = c.enc_units, c.dec_units, 2 * c.enc_units
    encoder = 0
    for layer in range(c.enc_layers):
        inp = c.emb_dim if layer == 0 else mem
        encoder += 2 * (2 * inp * gates * enc + 2 * enc * gates * enc)
    attention = c.attention != "none"
    decoder = 0
    for layer in range(c.dec_layers):
        inp = c.emb_dim if layer == 0 else dec
        decoder += 2 * inp * gates * dec + 2 * dec * gates * dec
    if attention:
        if c.input_feeding:
            decoder += 2 * dec * gates * dec
        decoder += 2 * (mem + dec) * dec  # attention output layer
        keys = 2 * mem * dec if c.attention == "general" else 0
        encoder += keys
    decoder += 2 * dec * tgt_vocab
    return decoder + src_per_tgt * encoder  # (scores and context grow with length; left out, < 2%)


def peak_dtype(variant):
    """The dtype of a variant's matrix products, whose peak it is measured against."""
    return "bfloat16" if "bfloat16" in variant else "float32"


class Variant:
    """One training set-up: a Trainer with its compiled step and the same fixed batches."""

    def __init__(self, name, args):
        import keras
        import tensorflow as tf

        from mt.config import Config
        from mt.train import Trainer, load_manifest

        name_only, _, option = name.partition("/")
        precision, _, replicas = name_only.partition("@")
        if option not in ("", "untapped", "loop", "narrow"):
            raise SystemExit(f"unknown variant option /{option} (known: /untapped, /loop, /narrow)")
        import mt.model

        # widening is decided while the step is traced, below: no kernel has 2^30 columns
        mt.model.WIDEN_MULTIPLE = 1 << 30 if option == "narrow" else WIDEN_MULTIPLE
        devices = [f"/cpu:{i}" for i in range(int(replicas or 1))]
        if replicas:
            strategy = tf.distribute.MirroredStrategy(devices)
        else:
            strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
        keras.mixed_precision.set_global_policy(precision)
        cfg = Config.load(args.config)
        cfg.train.precision = precision
        self.name = name
        self.trainer = Trainer(cfg, args.data, load_manifest(args.data), tempfile.mkdtemp(prefix="mt-bench-"),
                               strategy)
        if option == "untapped":  # the attention's gradients by autodiff through the loop (model.attention_taps)
            self.trainer.model.attention_taps = False
        if option == "loop":  # without input feeding, the step loop rather than the parallel attention
            self.trainer.model.parallel_teacher_forcing = False
        dataset = self.trainer._distributed_dataset(0, 0)
        scalar, count = tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.int64)
        self.step = tf.function(self.trainer._train_step, autograph=False, input_signature=[
            dataset.element_spec, tf.TensorSpec([2], tf.float32), scalar, count, count])
        iterator = iter(dataset)
        self.batches = [next(iterator) for _ in range(args.batches)]
        self.tokens = 0.0
        self.flags = tf.constant([0.0, 0.0])  # neither out of time nor asked to stop
        # a constant rate and position: the speed depends on neither
        self.position = (tf.constant(cfg.train.learning_rate, tf.float32), tf.constant(0, tf.int64),
                         tf.constant(0, tf.int64))
        for batch in self.batches[:2]:  # trace and warm up
            self.step(batch, self.flags, *self.position)

    def time_round(self):
        start, tokens = time.perf_counter(), 0.0
        for batch in self.batches:
            _, batch_tokens, _, _, _ = self.step(batch, self.flags, *self.position)
            tokens += float(batch_tokens)
        self.tokens = tokens  # target tokens in one round (the same every round)
        return tokens / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--config", default="rnn-base-cpu")
    parser.add_argument("--variants", default="float32,mixed_bfloat16")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    from mt.runtime import import_tensorflow_quietly

    import_tensorflow_quietly()
    from mt.config import Config
    from mt.distribute import split_cpu
    from mt.train import load_manifest

    names = args.variants.split(",")
    split_cpu(max(int(n.split("/")[0].partition("@")[2] or 1) for n in names))
    variants = [Variant(name, args) for name in names]
    speeds = {v.name: [] for v in variants}
    samples = {peak_dtype(name): [] for name in names}
    for _ in range(args.rounds):
        for v in variants:
            speeds[v.name].append(v.time_round())
        # the peak is measured after every round, so that it sees the machine as busy as the training did
        for name in samples:
            samples[name].append(matmul_peak(name, seconds=1.0))
    peaks = {name: statistics.median(values) for name, values in samples.items()}
    manifest = load_manifest(args.data)
    train = manifest["splits"]["train"]
    flops = flops_per_target_token(Config.load(args.config).model, manifest["vocab"]["src"],
                                   manifest["vocab"]["tgt"], train["src_tokens"] / train["tgt_tokens"])
    report(args, speeds, peaks, flops, {v.name: v.tokens for v in variants}, samples)


def report(args, speeds, peaks, flops, tokens_per_round, samples):
    base = statistics.median(next(iter(speeds.values())))
    print(f"config {args.config}, {args.batches} batches x {args.rounds} rounds; model: "
          f"{3 * flops / 1e6:.1f} MFLOP per target token (forward + backward)")
    print("matmul peak this run (median of one measure after each round): " + ", ".join(
        f"{name} {peaks[name]:.0f} GFLOP/s ({', '.join(f'{v:.0f}' for v in samples[name])})" for name in peaks))
    print("| variant | target tokens/s (median) | steps/s | rounds | x first | GFLOP/s | % of its matmul peak |")
    print("|---|---:|---:|---|---:|---:|---:|")
    results = {}
    for name, values in speeds.items():
        median = statistics.median(values)
        rate = median * 3 * flops / 1e9
        peak = peaks[peak_dtype(name)]
        steps = median * args.batches / tokens_per_round[name]
        results[name] = {"tokens_per_s": median, "steps_per_s": steps, "rounds": values, "gflops": rate,
                         "peak": peak}
        print(f"| {name} | {median:,.0f} | {steps:.2f} | {', '.join(f'{v:,.0f}' for v in values)} | "
              f"{median / base:.2f} | "
              f"{rate:.0f} | {100 * rate / peak:.0f}% |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"peaks": peaks, "peak_samples": samples, "flops_per_token": 3 * flops, "variants": results},
                      f, indent=2)


if __name__ == "__main__":
    main()
