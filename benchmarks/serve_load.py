"""`mt serve` under load against `mt translate` of the same file, greedy and beam 5, in one invocation.

    python benchmarks/serve_load.py --model RUN --input data/default/test.src --lines 500

For each search: `mt translate` of the first --lines lines in one batch, and with its default batches
(the time it reports for the translation itself, model loading left out, compiling the search included;
one batch runs on one decoder's share of the cores, the default batches on all decoders); then --clients concurrent
clients sending those lines to one `mt serve` one sentence per request, as fast as answers come:
sentences/s over the whole load, and the p50 and p95 latency of a request, the answers checked against
translate's output. After the server has stopped, in this process (mt.load(RUN)): the same batch once its
search is compiled (on the threads of one of their decoders), and one sentence at a time, the p50 time
of the search of one sentence alone beside the p50 latency of a request of one sentence alone to the idle server; their difference is what HTTP,
JSON and the batching wait (--max-wait-ms) add.

Bounded: every request times out after 120 s, and no new request starts after --max-seconds of load.
"""

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SEARCHES = {"greedy": {"search": "greedy"}, "beam 5": {"search": "beam", "beam_size": 5}}


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cli_args(settings):
    return [a for k, v in settings.items() for a in (f"--{k.replace('_', '-')}", str(v))]


def translate_file(model, path, count, settings, extra):
    """(output lines, seconds of translation) of `mt translate` of the file in batches of `count` lines
    (None: its default batches)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.txt")
        done = subprocess.run([sys.executable, "-m", "mt.cli", "translate", path, "--model", model, "-o", out,
                               *(["--batch-size", str(count)] if count else []), *cli_args(settings), *extra],
                              capture_output=True, text=True, timeout=3600, env=env())
        if done.returncode:
            raise SystemExit(done.stderr)
        seconds = float(re.search(r"translated \d+ lines in ([\d.]+) s", done.stderr).group(1))
        with open(out, encoding="utf-8") as f:
            return f.read().splitlines(), seconds


def env():
    return {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


class Server:
    def __init__(self, model, extra):
        self.process = subprocess.Popen([sys.executable, "-m", "mt.cli", "serve", "--model", model, "--port", "0",
                                         *extra], stderr=subprocess.PIPE, text=True, env=env())
        self.url, found = None, threading.Event()

        def read():
            for line in self.process.stderr:
                match = re.search(r"on (http://[\d.]+:\d+)", line)
                if match and not self.url:
                    self.url = match.group(1)
                    found.set()
                elif not match:
                    sys.stderr.write("server: " + line)

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(120):
            raise SystemExit("the server did not start")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=10):
                    return
            except OSError:
                time.sleep(0.5)
        raise SystemExit("the server did not become ready")

    def translate(self, text, settings):
        req = urllib.request.Request(self.url + "/v1/translate", json.dumps({"text": text, **settings}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as response:
            return json.loads(response.read())["translations"]

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(120)


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def load(server, lines, settings, clients, max_seconds):
    """(answers by line index, seconds, latencies) of `clients` threads sending one line per request."""
    answers, latencies, lock = {}, [], threading.Lock()
    todo = iter(range(len(lines)))
    start = time.monotonic()

    def client():
        while time.monotonic() - start < max_seconds:
            with lock:
                i = next(todo, None)
            if i is None:
                return
            sent = time.monotonic()
            answer = server.translate(lines[i], settings)
            with lock:
                latencies.append(time.monotonic() - sent)
                answers[i] = answer

    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(client) for _ in range(clients)]:
            f.result()
    return answers, time.monotonic() - start, latencies


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="Run folder.")
    parser.add_argument("--input", required=True, help="Source text, one sentence a line.")
    parser.add_argument("--lines", type=int, default=500, help="Use the first N lines.")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--alone", type=int, default=20, help="Sentences timed one at a time.")
    parser.add_argument("--max-seconds", type=float, default=600, help="No new request after this long a load.")
    parser.add_argument("--server-args", default="", help="More options for mt serve, e.g. '--max-wait-ms 10'.")
    parser.add_argument("--workers", type=int, default=None,
                        help="Decoders of mt serve and mt translate, and this process's threads to match "
                             "(default: theirs, 2 on a CPU of 2 or more cores).")
    parser.add_argument("--precision", default="auto", help="Decoding precision of all three (float32: no "
                        "bfloat16 round-off, which can settle a near-tie otherwise in another batch).")
    args = parser.parse_args()
    common = ["--precision", args.precision] + (["--workers", str(args.workers)] if args.workers else [])

    with open(args.input, encoding="utf-8") as f:
        lines = [line.strip() for line in f][:args.lines]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
        path = f.name
    rows = []
    try:
        expected = {}
        for name, settings in SEARCHES.items():
            log(f"mt translate, {name}, {len(lines)} lines in one batch")
            expected[name], seconds = translate_file(args.model, path, len(lines), settings, common)
            rows.append({"search": name, "how": "mt translate, one batch, compiling included",
                         "sentences/s": len(lines) / seconds, "seconds": seconds})
            log(f"mt translate, {name}, {len(lines)} lines in its default batches")
            default, seconds = translate_file(args.model, path, None, settings, common)
            rows.append({"search": name, "how": "mt translate, default batches, compiling included",
                         "sentences/s": len(lines) / seconds, "seconds": seconds,
                         "differ from translate": sum(a != b for a, b in zip(default, expected[name]))})
        log("starting mt serve")
        server = Server(args.model, common + args.server_args.split())
        alone_http = {}
        for name, settings in SEARCHES.items():
            server.translate(lines[0], settings)  # compiles this search
            log(f"mt serve, {name}, {args.clients} clients")
            answers, seconds, latencies = load(server, lines, settings, args.clients, args.max_seconds)
            wrong = sum(answers[i] != expected[name][i] for i in answers)
            rows.append({"search": name, "how": f"mt serve, {args.clients} clients, 1 sentence a request",
                         "sentences/s": len(answers) / seconds, "seconds": seconds,
                         "p50 ms": 1000 * percentile(latencies, 0.5), "p95 ms": 1000 * percentile(latencies, 0.95),
                         "answered": len(answers), "differ from translate": wrong})
            alone = []
            for line in lines[:args.alone]:
                sent = time.monotonic()
                server.translate(line, settings)
                alone.append(time.monotonic() - sent)
            alone_http[name] = statistics.median(alone)
        code = server.stop()
        log(f"server stopped (exit {code})")

        import mt
        from mt.translate import decoding_workers

        decoding_workers(args.workers)  # the threads of one decoder of translate and of the server
        model = mt.load(args.model, precision=args.precision)
        for name, settings in SEARCHES.items():
            model.translate(lines[0], **settings)  # compiles this search
            sent = time.monotonic()
            wrong = sum(a != b for a, b in zip(model.translate(lines, batch_size=len(lines), **settings),
                                                expected[name]))
            seconds = time.monotonic() - sent
            rows.append({"search": name, "how": "mt translate's search, one batch, compiled", "seconds": seconds,
                         "sentences/s": len(lines) / seconds, "differ from translate": wrong})
            for line in lines[:args.alone]:  # the server met these lengths in its load already
                model.translate(line, **settings)
            alone = []
            for line in lines[:args.alone]:
                sent = time.monotonic()
                model.translate(line, **settings)
                alone.append(time.monotonic() - sent)
            rows.append({"search": name, "how": "one sentence alone", "p50 ms": 1000 * alone_http[name],
                         "search p50 ms": 1000 * statistics.median(alone)})
    finally:
        os.unlink(path)

    columns = ["search", "how", "sentences/s", "seconds", "p50 ms", "p95 ms", "search p50 ms", "answered",
               "differ from translate"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" if c in ("search", "how") else "---:" for c in columns) + "|")
    for row in rows:
        cells = [row.get(c, "") for c in columns]
        print("| " + " | ".join(f"{c:.1f}" if isinstance(c, float) else str(c) for c in cells) + " |")


if __name__ == "__main__":
    main()
