"""Wall time of whole `mt translate` commands from two or more checkouts of mt, taking turns.

Each checkout (a folder holding an `mt/` package, e.g. a `git worktree` of an older commit) runs
`python -m mt.cli translate` on the same input with the same model and options, one after the other,
for several rounds; the table shows each checkout's median wall time and CPU time (user + system), their
ratios to the first checkout's, and whether its output is byte-identical to the first one's. Start-up
(importing TensorFlow, loading the model, tracing) is included, as a user sees it.

    git worktree add /tmp/mt-old <commit>
    python benchmarks/translate_ab.py --trees /tmp/mt-old,. --model work/compare/mt-cpu-20min \
        --input work/bible/corpus/test.es --searches greedy,beam --rounds 3
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time


def run_once(tree, model, input_path, search, out_path):
    env = {**os.environ, "PYTHONPATH": os.path.abspath(tree)}
    command = [sys.executable, "-m", "mt.cli", "translate", "-", "--model", model, "--search", search]
    with open(input_path, "rb") as src, open(out_path, "wb") as out:
        before, start = cpu_of_children(), time.perf_counter()
        subprocess.run(command, stdin=src, stdout=out, stderr=subprocess.DEVNULL, env=env,
                       cwd=os.path.abspath(tree), check=True)
        return time.perf_counter() - start, cpu_of_children() - before


def cpu_of_children():
    """CPU seconds (user + system) of the finished child processes so far. On a shared machine CPU time
    varies less than wall time: time the host gives to other guests is not counted."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trees", required=True, help="comma-separated checkouts; the first is the baseline")
    parser.add_argument("--model", required=True, help="run folder written by mt train; or one per checkout, "
                        "comma-separated (the same weights in the layout each checkout writes)")
    parser.add_argument("--input", required=True, help="source text")
    parser.add_argument("--searches", default="greedy,beam")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    trees = args.trees.split(",")
    models = [os.path.abspath(m) for m in args.model.split(",")]
    if len(models) not in (1, len(trees)):
        parser.error("--model takes one run folder, or one per checkout")
    model_of = dict(zip(trees, models * len(trees) if len(models) == 1 else models))
    input_path = os.path.abspath(args.input)
    print("| search | checkout | seconds (rounds) | median | x first | CPU seconds (median) | x first | "
          "output as the first's |")
    print("|---|---|---|---:|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for search in args.searches.split(","):
            times, cpu = {tree: [] for tree in trees}, {tree: [] for tree in trees}
            outputs = {tree: os.path.join(tmp, f"{i}.{search}.out") for i, tree in enumerate(trees)}
            for _ in range(args.rounds):
                for tree in trees:
                    wall, used = run_once(tree, model_of[tree], input_path, search, outputs[tree])
                    times[tree].append(wall)
                    cpu[tree].append(used)
            with open(outputs[trees[0]], "rb") as f:
                first = f.read()
            base, cpu_base = statistics.median(times[trees[0]]), statistics.median(cpu[trees[0]])
            for tree in trees:
                with open(outputs[tree], "rb") as f:
                    same = "yes" if f.read() == first else "no"
                median = statistics.median(times[tree])
                rounds = ", ".join(f"{t:.1f}" for t in times[tree])
                used = statistics.median(cpu[tree])
                print(f"| {search} | {tree} | {rounds} | {median:.2f} | {median / base:.2f} | {used:.2f} | "
                      f"{used / cpu_base:.2f} | {same} |", flush=True)


if __name__ == "__main__":
    main()
