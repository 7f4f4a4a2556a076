"""How long `mt translate -` takes to answer one line written into its stdin, as a filter is used.

One `python -m mt.cli translate - --model RUN` process is started; the script writes the first --lines
lines of INPUT into its stdin one at a time, each only after the translation of the one before has come
back, and times each answer from the write to the translated line on stdout. The first line, which
waits for the model to load and the search to be traced, is reported apart.

    python benchmarks/translate_latency.py --model RUN --input test.es --lines 50 --search beam
"""

import argparse
import statistics
import subprocess
import sys
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--lines", type=int, default=50)
    parser.add_argument("--search", default="beam")
    args = parser.parse_args()
    with open(args.input, encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip()][:args.lines]
    command = [sys.executable, "-m", "mt.cli", "translate", "-", "--model", args.model, "--search", args.search]
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    times = []
    try:
        for line in lines:
            start = time.perf_counter()
            child.stdin.write(line.encode("utf-8") + b"\n")
            child.stdin.flush()
            if not child.stdout.readline():
                sys.exit("mt translate ended before answering")
            times.append(time.perf_counter() - start)
        child.stdin.close()
        child.wait(timeout=60)
    finally:
        child.kill()
    rest = sorted(times[1:])
    print(f"{args.search}, {len(lines)} lines of {args.input}, one at a time")
    print(f"first line (start-up, model loading and tracing included): {times[0]:.2f} s")
    if rest:
        p95 = rest[min(len(rest) - 1, int(round(0.95 * (len(rest) - 1))))]
        print(f"the next {len(rest)} lines: median {1000 * statistics.median(rest):.0f} ms, "
              f"p95 {1000 * p95:.0f} ms, fastest {1000 * rest[0]:.0f} ms, slowest {1000 * rest[-1]:.0f} ms")


if __name__ == "__main__":
    main()
