"""The export equivalence check: `mt export` of a run, its SavedModel run by TensorFlow alone (a fresh
process that cannot import mt) against `mt translate` of the same lines, greedy and beam 5.

    python benchmarks/export_check.py --model RUN --input test.es --lines 200

For each search: `mt export` with that search (its other settings translate's defaults) into a temporary
folder; `mt translate` of the first --lines lines, the time it reports for the translation itself (model
loading left out, compiling the search included) and the whole command's; then a process started with
`python -I -S` (no mt on its path) that imports TensorFlow and tensorflow-text, loads the SavedModel and
translates the lines in one call, twice: the time to the loaded model, the first call's time (the graph's
first run included) and the second's, and the whole process's time.
The outputs are compared line by line. `--plain-env` sets environment variables of that process alone
(mt sets TF_ENABLE_ONEDNN_OPTS=1 for itself; TensorFlow alone uses oneDNN only on CPUs with AVX-512).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import sysconfig
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SEARCHES = {"greedy": ["--search", "greedy"], "beam 5": ["--search", "beam", "--beam-size", "5"]}

PLAIN = """
import importlib.util, json, sys, time
start = time.time()
sys.path.append(sys.argv[1])  # TensorFlow's and tensorflow-text's site-packages, without mt
assert importlib.util.find_spec("mt") is None, "mt can be imported"
import tensorflow as tf
import tensorflow_text  # registers the SentencePiece ops
with open(sys.argv[3], encoding="utf-8") as f:
    lines = f.read().split("\\n")[:-1]
translate = tf.saved_model.load(sys.argv[2]).signatures["serving_default"]
loaded = time.time()
times, out = [], None
for _ in range(2):
    t = time.time()
    out = translate(text=tf.constant(lines))["translations"].numpy()
    times.append(time.time() - t)
with open(sys.argv[4], "w", encoding="utf-8") as f:
    f.write("".join(t.decode("utf-8") + "\\n" for t in out))
print(json.dumps({"load": loaded - start, "first": times[0], "second": times[1]}))
"""


def mt_command(*args):
    return [sys.executable, "-m", "mt.cli", *args]


def timed(command, env=None, **kwargs):
    start = time.time()
    out = subprocess.run(command, capture_output=True, text=True, env=env or dict(os.environ, PYTHONPATH=ROOT),
                         **kwargs)
    if out.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{out.stderr[-3000:]}")
    return out, time.time() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="run folder")
    parser.add_argument("--input", required=True, help="source text")
    parser.add_argument("--lines", type=int, default=200, help="the first this many lines of --input")
    parser.add_argument("--plain-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable of the TensorFlow-alone process only, e.g. "
                        "TF_ENABLE_ONEDNN_OPTS=0 for TensorFlow's Eigen kernels where mt runs oneDNN's")
    args = parser.parse_args()
    plain_env = dict(os.environ, **dict(item.split("=", 1) for item in args.plain_env))
    site = sysconfig.get_paths()["purelib"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="export-check-") as work:
        source = os.path.join(work, "input.txt")
        with open(args.input, encoding="utf-8") as f:
            lines = f.read().split("\n")[:args.lines]
        with open(source, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
        for name, settings in SEARCHES.items():
            folder = os.path.join(work, name.replace(" ", "-"))
            _, export_seconds = timed(mt_command("export", "--model", args.model, "--out", folder, *settings))
            ours = os.path.join(work, "translate.txt")
            out, translate_seconds = timed(mt_command("translate", source, "--model", args.model, "-o", ours,
                                                      *settings))
            reported = float(re.search(r"translated \d+ lines in ([\d.]+) s", out.stderr).group(1))
            theirs = os.path.join(work, "plain.txt")
            out, plain_seconds = timed([sys.executable, "-I", "-S", "-c", PLAIN, site, folder, source, theirs],
                                       env=plain_env, cwd=work)
            plain = json.loads(out.stdout.strip().splitlines()[-1])
            with open(ours, encoding="utf-8") as a, open(theirs, encoding="utf-8") as b:
                first, second = a.read().split("\n"), b.read().split("\n")
            same = sum(x == y for x, y in zip(first, second)) - 1  # both end in an empty string
            rows.append((name, same, len(lines), export_seconds, reported, translate_seconds, plain["load"],
                         plain["first"], plain["second"], plain_seconds))
            print(f"{name}: {same}/{len(lines)} identical", file=sys.stderr, flush=True)
    print("| search | identical lines | mt export (s) | mt translate: translation (s) | mt translate: command (s) "
          "| SavedModel: imports and load (s) | first call (s) | second call (s) | process (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, same, total, export_s, reported, command_s, load, first, second, process_s in rows:
        print(f"| {name} | {same} / {total} | {export_s:.1f} | {reported:.1f} | {command_s:.1f} | {load:.1f} | "
              f"{first:.2f} | {second:.2f} | {process_s:.1f} |")


if __name__ == "__main__":
    main()
