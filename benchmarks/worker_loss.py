"""How long the surviving worker of a 2-worker cluster on 127.0.0.1 takes to stop when the other is lost.

    python benchmarks/worker_loss.py --level mt --repeats 2
    python benchmarks/worker_loss.py --level tf --heartbeats 3,10,30

--level mt: the real `mt train --strategy multi-worker` on a tiny model (300 pairs of data/default), the
lost worker killed (SIGKILL: its sockets close) or frozen (SIGSTOP: nothing closes, as when a machine or
its network is gone) a second after the chief's first checkpoint; prints the seconds from the signal to
the survivor's exit and its error line.

--level tf: MultiWorkerMirroredStrategy alone, a loop of small all-reduces, to compare the ways to notice a
lost worker: the coordination service's heartbeat timeout (--heartbeats, seconds), and a collective
timeout (CommunicationOptions(timeout_seconds)) against a worker that is alive but stuck (its heartbeats
go on, its all-reduces never come).

Every process is bounded: a survivor still running after --wait seconds counts as hung and is killed.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TINY = """
model: {emb_dim: 8, enc_units: 8, dec_units: 16, dropout: 0.1}
train: {batch_tokens: 300, learning_rate: 0.003, eval_every: 1000, eval_bleu_sentences: 0, log_every: 2,
        checkpoint_every: 10, precision: float32}
"""


def free_addresses(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    addresses = [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    for s in sockets:
        s.close()
    return addresses


STARTED = []  # every task started, killed at the end whatever happens


def start_cluster(argv, env_extra, folder):
    """Two tasks running `argv` with their TF_CONFIG; stderr of each in a file of `folder`."""
    workers = free_addresses(2)
    tasks = []
    for index in range(2):
        env = dict(os.environ, PYTHONPATH=ROOT, TMPDIR=folder, **env_extra,
                   TF_CONFIG=json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}))
        err = os.path.join(folder, f"task-{index}-{time.time():.3f}.err")
        with open(err, "w") as f:
            tasks.append((subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=f, text=True, env=env), err))
        STARTED.append(tasks[-1][0])
    return tasks


def lose(tasks, victim, how, ready, wait):
    """Wait until `ready()`, send `how` to task `victim`; (seconds until the other exited or None, its
    stderr)."""
    deadline = time.time() + 300
    while not ready():
        if any(p.poll() is not None for p, _ in tasks) or time.time() > deadline:
            raise SystemExit("a task ended before the measurement: " + open(tasks[0][1]).read()[-2000:])
        time.sleep(0.1)
    time.sleep(1.0)
    survivor = tasks[1 - victim][0]
    if how is not None:
        tasks[victim][0].send_signal(how)
    sent = time.time()
    try:
        survivor.wait(timeout=wait)
        seconds = time.time() - sent
    except subprocess.TimeoutExpired:
        seconds = None
    for p, _ in tasks:
        if p.poll() is None:
            p.kill()
        p.wait()
    return seconds, open(tasks[1 - victim][1]).read()


def prepare(folder):
    from click.testing import CliRunner

    from mt.cli import cli

    for side in ("src", "tgt"):
        with open(os.path.join(ROOT, "data", "default", f"train.{side}"), encoding="utf-8") as f:
            lines = f.read().splitlines()[:300]
        with open(os.path.join(folder, f"train.{side}"), "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    with open(os.path.join(folder, "tiny.yaml"), "w") as f:
        f.write(TINY)
    result = CliRunner().invoke(cli, ["preprocess", "--src", os.path.join(folder, "train.src"), "--tgt",
                                      os.path.join(folder, "train.tgt"), "--out", os.path.join(folder, "data"),
                                      "--vocab-size", "300"])
    assert result.exit_code == 0, result.output


def measure_mt(args, folder):
    prepare(folder)
    cases = [(1, "SIGKILL"), (0, "SIGKILL"), (1, "SIGSTOP"), (0, "SIGSTOP")]
    print(f"| lost task | signal | --worker-timeout | seconds to the survivor's exit | error line |")
    print("|---|---|---:|---:|---|")
    for repeat in range(args.repeats):
        for victim, how in cases:
            run = os.path.join(folder, f"run-{victim}-{how}-{repeat}")
            argv = [sys.executable, "-m", "mt.cli", "train", "--data", os.path.join(folder, "data"), "--out", run,
                    "--config", os.path.join(folder, "tiny.yaml"), "--strategy", "multi-worker",
                    "--max-steps", "100000", "--worker-timeout", str(args.worker_timeout)]
            checkpoints = os.path.join(run, "checkpoints")
            seconds, err = lose(start_cluster(argv, {}, folder), victim, getattr(signal, how),
                                lambda: os.path.isdir(checkpoints) and any(n.endswith(".index")
                                                                           for n in os.listdir(checkpoints)),
                                args.wait)
            line = next((l for l in err.splitlines() if l.startswith("error:")), "(none)")
            took = "hung" if seconds is None else f"{seconds:.1f}"
            print(f"| worker {victim} | {how} | {args.worker_timeout:g} | {took} | {line[:160]} |", flush=True)


TASK = r'''
import json, os, sys, time
import tensorflow as tf
from tensorflow.python.eager import context

heartbeat, collective, stuck_at = (float(x) for x in sys.argv[1:4])
config = json.loads(os.environ["TF_CONFIG"])
me = config["task"]["index"]
if heartbeat:
    context.context().configure_coordination_service(
        service_type="standalone", service_leader="/job:worker/replica:0/task:0",
        heartbeat_timeout_in_ms=int(heartbeat * 1000))
    context.context().coordination_service.coordinated_job_list.add(name="worker", num_tasks=2)
options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=collective or None)
strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
with strategy.scope():
    v = tf.Variable(1.0)
step = tf.function(lambda: tf.distribute.get_replica_context().all_reduce("SUM", v * 2.0))
i = 0
try:
    while True:
        strategy.run(step)
        i += 1
        if i == 20:
            print("running", flush=True)
        if me == 1 and i == stuck_at:
            time.sleep(100000)  # alive (heartbeats go on) but stuck
        time.sleep(0.05)
except tf.errors.OpError as e:
    why = next((l for l in str(e).splitlines() if "aborted by" in l or "timed out" in l), "")
    print("FAILED", type(e).__name__ + ":", why.split("aborted by: ")[-1][:100], file=sys.stderr, flush=True)
    sys.exit(1)
'''


def measure_tf(args, folder):
    script = os.path.join(folder, "task.py")
    with open(script, "w") as f:
        f.write(TASK)
    print("| case | heartbeat timeout | collective timeout | seconds to the survivor's exit | error |")
    print("|---|---:|---:|---:|---|")
    cases = [(f"worker {victim} {how}", heartbeat, 0, -1, victim, how)
             for heartbeat in args.heartbeats for victim in (1, 0) for how in ("SIGKILL", "SIGSTOP")]
    cases += [("worker 1 stuck, alive", 10, 0, 40, 1, None), ("worker 1 stuck, alive", 10, 5, 40, 1, None)]
    for name, heartbeat, collective, stuck_at, victim, how in cases:
        tasks = start_cluster([sys.executable, script, str(heartbeat), str(collective), str(stuck_at)],
                              {"TF_CPP_MIN_LOG_LEVEL": "3"}, folder)
        line = tasks[victim][0].stdout
        seconds, err = lose(tasks, victim, how and getattr(signal, how), lambda: line.readline() == "running\n",
                            args.wait)
        took = "hung" if seconds is None else f"{seconds:.1f}"
        why = next((l[len("FAILED "):] for l in err.splitlines() if l.startswith("FAILED ")), "-")
        print(f"| {name} | {heartbeat:g} s | {collective or '-'} | {took} | {why} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--level", choices=["mt", "tf"], default="mt")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--worker-timeout", type=float, default=10.0, help="--level mt: mt train's option")
    parser.add_argument("--heartbeats", default="10", help="--level tf: heartbeat timeouts to try, in seconds")
    parser.add_argument("--wait", type=float, default=120.0, help="seconds after which a survivor counts as hung")
    args = parser.parse_args()
    args.heartbeats = [float(x) for x in args.heartbeats.split(",")]
    sys.path.insert(0, ROOT)
    with tempfile.TemporaryDirectory(prefix="worker-loss-") as folder:
        try:
            (measure_mt if args.level == "mt" else measure_tf)(args, folder)
        finally:
            for process in STARTED:
                if process.poll() is None:
                    process.kill()
                process.wait()


if __name__ == "__main__":
    main()
