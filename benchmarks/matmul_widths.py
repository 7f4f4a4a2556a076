"""The matrix products of an rnn-base-cpu model, with their kernels as they are and widened, side by side.

On AVX2 CPUs oneDNN (TensorFlow's CPU matrix library) multiplies by a kernel whose rows are a multiple of
512 values long at a fraction of its usual rate; the gate kernels of 256- and 512-unit LSTMs are
[d, 1024] and [d, 2048]. `mt.model.widen` appends 16 zero columns to such kernels and the products cut
the extra columns off. This script times x [M, d] @ kernel [d, n] for the model's shapes, once with the
kernel as it is and once through `widen` + `matmul`, taking turns, at M = 64 (the rows of one decoder
step) and M = 2,048 (the rows of one input projection of a training batch).

    python benchmarks/matmul_widths.py --rounds 5
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# (name, d, n): rnn-base-cpu's products (embeddings 256, 256 encoder units per direction, 512 decoder units,
# 8,000 target pieces), and one square product of the kind used to measure a machine's peak
SHAPES = [
    ("encoder recurrent", 256, 1024),
    ("decoder input projection", 256, 2048),
    ("decoder [feed; h] @ [W_feed; U]", 1024, 2048),
    ("attention keys", 512, 512),
    ("attention output", 1024, 512),
    ("output layer (8,000 pieces)", 512, 8000),
    ("square 2048", 2048, 2048),
]


def main():
    import mt  # noqa: F401  (TensorFlow settings)
    import tensorflow as tf

    from mt.model import matmul, widen

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="16,64,2048", help="comma-separated M values")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.3, help="time per measurement")
    args = parser.parse_args()

    @tf.function(autograph=False)
    def chain(x, kernel, n, repeats):
        # each product feeds the next, so none can be skipped or run ahead
        for _ in range(repeats):
            x = x + 1e-6 * tf.reduce_mean(matmul(x, kernel, n))
        return x

    def rate(x, kernel, n, flops):
        repeats = 10
        chain(x, kernel, n, repeats).numpy()
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < args.seconds:
            chain(x, kernel, n, repeats).numpy()
            count += repeats
        return flops * count / (time.perf_counter() - start) / 1e9

    print("| M | product | x @ [d, n] | as is GFLOP/s | widened GFLOP/s | widened / as is |")
    print("|---:|---|---|---:|---:|---:|")
    for m in (int(r) for r in args.rows.split(",")):
        for name, d, n in SHAPES:
            kernel = tf.random.normal([d, n])
            wide = widen(kernel)
            x = tf.random.normal([m, d])
            flops = 2 * m * d * n
            plain, widened = [], []
            for _ in range(args.rounds):
                plain.append(rate(x, kernel, n, flops))
                widened.append(rate(x, wide, n, flops))
            a, b = statistics.median(plain), statistics.median(widened)
            shape = f"[{d}, {n}]" + ("" if wide.shape[-1] == n else f" -> [{d}, {wide.shape[-1]}]")
            print(f"| {m} | {name} | {shape} | {a:.0f} | {b:.0f} | {b / a:.2f} |", flush=True)


if __name__ == "__main__":
    main()
