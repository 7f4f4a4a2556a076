"""Peak memory of whole `mt translate` commands against the length of their input.

Each run is `python -m mt.cli translate` in a fresh process of one checkout (a folder holding an `mt/`
package), on the first N lines of one generated input, from a file (-o) or through a pipe (stdout); the
peak RSS is the process's own VmHWM, read at its exit (a child's ru_maxrss would also count the memory
of the parent it was forked from).

    python benchmarks/translate_memory.py --trees /tmp/mt-old,. --lines 20000,200000 --via file,pipe

Without --model the runs use the tests' tiny untrained model, made never to end a sentence, on lines of
three one-piece words: every batch then has the same shapes. TensorFlow's oneDNN kernels keep a compiled
primitive per operand shape (up to 1,024 per thread), so inputs of varied lengths add memory with each
new shape until those caches are full, whatever the input handling; `--onednn off`
(TF_ENABLE_ONEDNN_OPTS=0) shows a run without them, and `--varied` lines of varied lengths. `--input
FILE` takes the lines of FILE instead (repeated to N lines).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# runs `mt ARGS...` and writes its VmHWM (kB) to the file named by its first argument at exit
PEAK = """if True:
    import atexit, runpy, sys

    def report(path=sys.argv[1]):
        with open("/proc/self/status") as status, open(path, "w") as out:
            out.write(next(line.split()[1] for line in status if line.startswith("VmHWM")))

    atexit.register(report)
    sys.argv = ["mt", *sys.argv[2:]]
    runpy.run_module("mt.cli", run_name="__main__")
"""


def tiny_model(folder):
    """The tests' tiny model that never ends a sentence, and lines of three one-piece source words."""
    sys.path.insert(0, ROOT)
    from tests.test_filter import WORDS, make_run

    from mt.tokenizer import Tokenizer

    from pathlib import Path

    run = make_run(Path(folder), endless=True)
    tok = Tokenizer(os.path.join(run, "src.spm.model"))
    single = [w for w in WORDS if len(tok.encode([w])[0]) == 1]
    return str(run), single, WORDS


def write_input(path, count, single=None, source=None, words=None):
    """`count` lines: of the file `source` (repeated), of 1 to 3 of `words`, or of 3 of `single`."""
    import numpy as np

    rng = np.random.default_rng(0)
    if source:
        with open(source, encoding="utf-8") as f:
            lines = [line.rstrip("\n") for line in f]
        text = [lines[i % len(lines)] for i in range(count)]
    elif words:
        text = [" ".join(rng.choice(words, int(rng.integers(1, 4)))) for _ in range(count)]
    else:
        text = [" ".join(rng.choice(single, 3)) for _ in range(count)]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(text) + "\n")


def run_once(tree, args, input_path, via, onednn, tmp):
    tree = os.path.abspath(tree)
    env = {**os.environ, "PYTHONPATH": tree, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if onednn == "off":
        env["TF_ENABLE_ONEDNN_OPTS"] = "0"
    peak = os.path.join(tmp, "peak")
    command = [sys.executable, "-c", PEAK, peak, "translate"]
    start = time.perf_counter()
    if via == "file":
        # cwd: `python -c` puts the current folder first on sys.path, before PYTHONPATH
        subprocess.run(command + [input_path, *args, "-o", os.path.join(tmp, "out.txt")], env=env, check=True,
                       cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:
        cat = subprocess.Popen(["cat", input_path], stdout=subprocess.PIPE)
        subprocess.run(command + ["-", *args], stdin=cat.stdout, env=env, check=True, cwd=tree,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cat.stdout.close()
        cat.wait()
    with open(peak) as f:
        return int(f.read()) / 1024, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trees", default=".", help="comma-separated checkouts")
    parser.add_argument("--model", help="run folder (default: the tests' tiny model, see above)")
    parser.add_argument("--input", help="take the lines of this file (default: generated three-word lines)")
    parser.add_argument("--varied", action="store_true", help="with the tiny model: lines of 1 to 3 of the "
                        "tests' words (1 to 7 pieces each), so that batch shapes vary")
    parser.add_argument("--lines", default="20000,200000")
    parser.add_argument("--via", default="file,pipe", help="file (-o) and/or pipe (stdin to stdout)")
    parser.add_argument("--onednn", default="on", help="on and/or off")
    parser.add_argument("--translate-args", default="--search greedy --max-length-ratio 0.5")
    args = parser.parse_args()
    counts = [int(n) for n in args.lines.split(",")]
    print("| checkout | oneDNN | input | lines | peak RSS (MB) | seconds |")
    print("|---|---|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        model, single, words = (args.model, None, None) if args.model else tiny_model(os.path.join(tmp, "run"))
        inputs = {}
        for count in counts:
            inputs[count] = os.path.join(tmp, f"{count}.txt")
            write_input(inputs[count], count, single, args.input, words if args.varied else None)
        extra = ["--model", model, *args.translate_args.split()]
        for tree in args.trees.split(","):
            for onednn in args.onednn.split(","):
                for via in args.via.split(","):
                    for count in counts:
                        peak, seconds = run_once(tree, extra, inputs[count], via, onednn, tmp)
                        print(f"| {tree} | {onednn} | {via} | {count:,} | {peak:.0f} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
