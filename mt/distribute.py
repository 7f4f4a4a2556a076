"""Choosing a tf.distribute strategy, and which worker writes the run folder.

    auto          MultiWorkerMirroredStrategy when TF_CONFIG names a cluster of several tasks,
                  MirroredStrategy when several GPUs are visible, else one device
    one           one device (the first GPU, else the CPU)
    mirrored      all local GPUs, or N logical CPU devices with --cpu-replicas N
    multi-worker  MultiWorkerMirroredStrategy over the cluster in TF_CONFIG
    tpu           TPUStrategy where a TPU cluster resolver answers

Everything here must run before TensorFlow initializes its devices (before the first op).

A multi-worker run waits at most `--join-timeout` for its cluster to form, then notices a lost worker
through the heartbeats of TensorFlow's coordination service, whose timeout (`--worker-timeout`) is set
here; `lost_worker` names the task that a failed collective operation blames.
Workers other than the chief write their checkpoints to temporary folders, held (flock) while they live,
so that a worker that died without removing its folder has it removed by the next one on that machine.
"""

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from mt.errors import UserError
from mt.folders import RunFolder
from mt.runtime import native_bfloat16

STRATEGIES = ("auto", "one", "mirrored", "multi-worker", "tpu")
WORKER_TIMEOUT = 10.0  # seconds without a heartbeat before a task counts as gone: TensorFlow's own default
JOIN_TIMEOUT = 600.0  # seconds to wait for every task to join: a worker that failed at its start never does
WORKER_FOLDER_PREFIX = "mt-worker-"
_HELD = {}  # worker folder -> the file descriptor of this process's lock on it


def cluster_spec():
    """The TF_CONFIG cluster as a dict ({} when unset); a malformed TF_CONFIG is a UserError."""
    raw = os.environ.get("TF_CONFIG", "")
    if not raw.strip():
        return {}
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise UserError(f"TF_CONFIG is not valid JSON ({e.msg} at position {e.pos})") from None
    if not isinstance(config, dict) or "cluster" not in config or "task" not in config:
        raise UserError('TF_CONFIG needs "cluster" and "task", e.g. {"cluster": {"worker": ["host:port", ...]}, '
                        '"task": {"type": "worker", "index": 0}}')
    return config


def resolve_precision(precision, cpuinfo="/proc/cpuinfo"):
    """The training precision for `precision`: "auto" is mixed_bfloat16 on a machine without GPUs whose
    CPU has native bfloat16 products, float32 elsewhere; any other value is returned as it is."""
    if precision != "auto":
        return precision
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return "float32"
    return "mixed_bfloat16" if native_bfloat16(cpuinfo) else "float32"


def make_strategy(name, cpu_replicas=0, precision="float32", worker_timeout=WORKER_TIMEOUT,
                  join_timeout=JOIN_TIMEOUT):
    """Create the strategy (and the mixed precision policy) before any model is built; a multi-worker
    strategy waits `join_timeout` seconds at most for every task to join, and counts a task as gone after
    `worker_timeout` seconds without its heartbeat."""
    import keras
    import tensorflow as tf

    if name not in STRATEGIES:
        raise UserError(f"--strategy must be one of {', '.join(STRATEGIES)}; got '{name}'")
    cluster = cluster_spec().get("cluster", {})
    tasks = sum(len(v) for v in cluster.values())
    gpus = tf.config.list_physical_devices("GPU")  # (listing logical devices would start the runtime)
    if name == "auto":
        name = "multi-worker" if tasks > 1 else "mirrored" if len(gpus) > 1 or cpu_replicas > 1 else "one"
    strategy = _create(name, tasks, cpu_replicas, gpus, worker_timeout, join_timeout)
    keras.mixed_precision.set_global_policy(precision)
    return strategy


def _create(name, tasks, cpu_replicas, gpus, worker_timeout, join_timeout):
    import tensorflow as tf

    if name == "multi-worker":  # collective ops must be set up before anything else starts the runtime
        if tasks < 1:
            raise UserError("--strategy multi-worker needs TF_CONFIG naming the cluster; see docs/distributed.md")
        if cpu_replicas:
            raise UserError("--cpu-replicas is for one machine; with multi-worker each worker is one replica")
        config = cluster_spec()
        watch_heartbeats(config["cluster"], worker_timeout)
        if join_timeout <= 0:
            raise UserError(f"--join-timeout must be a positive number of seconds, got {join_timeout:g}")
        task = config["task"]
        others = [_describe(t, config["cluster"]) for t in _all_tasks(config["cluster"])
                  if t != (task.get("type"), int(task.get("index", 0)))]
        missing = others[0] if len(others) == 1 else f"one of {', '.join(others)}"
        with bounded_wait(join_timeout, f"the cluster did not form within {join_timeout:g} s: {missing} did "
                          "not join; start every worker with the same command (a worker that failed at its "
                          "start says why in its own output), or give --join-timeout more time"):
            return tf.distribute.MultiWorkerMirroredStrategy()
    if cpu_replicas:
        split_cpu(cpu_replicas)
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        devices = devices or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.OpError) as e:
            raise UserError(f"--strategy tpu: no TPU answered ({str(e).splitlines()[0]})") from None
        return tf.distribute.TPUStrategy(resolver)
    return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")


def coordination_leader(cluster):
    """(job, index) of the task that runs TensorFlow's coordination service: the chief, else worker 0."""
    return ("chief", 0) if "chief" in cluster else ("worker", 0)


def watch_heartbeats(cluster, timeout):
    """Configure the coordination service that MultiWorkerMirroredStrategy starts, as the strategy itself
    would, but with a heartbeat timeout of `timeout` seconds: the leader counts a task that sent no
    heartbeat for that long as gone and aborts the collectives of every other task, and a task whose
    heartbeats to the leader go unanswered that long aborts its own (docs/design.md, "A lost worker").

    TensorFlow offers no public setting for this; the context's own method is used, as TensorFlow's
    ParameterServerStrategy does."""
    from tensorflow.python.eager import context

    if timeout <= 0:
        raise UserError(f"--worker-timeout must be a positive number of seconds, got {timeout:g}")
    if context.context().coordination_service is not None:
        return  # configured already in this process
    job, index = coordination_leader(cluster)
    context.context().configure_coordination_service(
        service_type="standalone", service_leader=f"/job:{job}/replica:0/task:{index}",
        heartbeat_timeout_in_ms=int(timeout * 1000))
    jobs = context.context().coordination_service.coordinated_job_list
    for job in ("chief", "worker"):  # the jobs the strategy coordinates
        if job in cluster:
            jobs.add(name=job, num_tasks=len(cluster[job]))


def heartbeat_timeout():
    """The heartbeat timeout in force in this process, in seconds (None before a multi-worker strategy)."""
    from tensorflow.python.eager import context

    config = context.context().coordination_service
    return config.heartbeat_timeout_in_ms / 1000 if config is not None and config.heartbeat_timeout_in_ms else None


_TASK = re.compile(r"/job:(\w+)/(?:replica:\d+/)?task:(\d+)")


def lost_worker(message, cluster, own, timeout=None):
    """A phrase naming the task that a failed collective operation's error `message` blames, and why:
    "worker 1 (10.0.0.2:2222) is gone (it sent no heartbeat for 10 s)". `cluster` is TF_CONFIG's cluster,
    `own` this task's (job, index).

    TensorFlow names a task that missed its heartbeats after "unhealthy", the peer of a failed call as its
    "remote target" (or by its address when it could not connect); a heartbeat to the coordination service
    that times out blames the service's host."""
    timeout = f" for {timeout:g} s" if timeout else ""
    blamed, why = None, None
    for marker, reason in (("unhealthy", f"it sent no heartbeat{timeout}"),
                           ("remote target", "its connection was lost")):
        at = message.find(marker)
        found = [t for t in _tasks(message[at:]) if t != own] if at >= 0 else []
        if found:
            blamed, why = found[0], reason
            break
    if blamed is None and "CoordinationService/Heartbeat" in message:
        blamed, why = coordination_leader(cluster), f"it answered no heartbeat{timeout}"
    if blamed is None:
        found = [t for t in _tasks(message) if t != own]
        blamed = found[0] if found else None
    if blamed is None:  # a call that could not connect names the peer's address
        found = [t for t in _all_tasks(cluster) if t != own and cluster[t[0]][t[1]] in message]
        blamed, why = (found[0], "its connection was lost") if found else (None, why)
    if why is None and "timed out" in message:
        why = "a collective operation timed out"
    name = "another task" if blamed is None else _describe(blamed, cluster)
    return f"{name} is gone" + (f" ({why})" if why else "")


_WATCH = """
import os, select, signal, sys
seconds, pid, message = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
if not select.select([sys.stdin], [], [], seconds)[0]:
    sys.stderr.write("error: " + message + "\\n")
    sys.stderr.flush()
    os.kill(pid, signal.SIGKILL)
"""


@contextlib.contextmanager
def bounded_wait(seconds, message):
    """Stop this process with the one-line error `message` when the block has not ended within `seconds`.

    The watch runs in a child process: TensorFlow waits for the cluster in native code that holds Python's
    lock, so no thread or signal handler of this process would run meanwhile, and only SIGKILL is sure to
    end the wait. The child ends quietly when the block ends or this process dies (the pipe closes)."""
    child = subprocess.Popen([sys.executable, "-c", _WATCH, str(seconds), str(os.getpid()), message],
                             stdin=subprocess.PIPE)
    try:
        yield
    finally:
        child.stdin.close()
        child.wait()


def _all_tasks(cluster):
    return [(job, index) for job in ("chief", "worker") for index in range(len(cluster.get(job, [])))]


def _tasks(text):
    return [(job, int(index)) for job, index in _TASK.findall(text)]


def _describe(task, cluster):
    job, index = task
    addresses = cluster.get(job, [])
    where = [addresses[index]] if index < len(addresses) else []
    if job == "chief":
        return "the chief" + (f" ({where[0]})" if where else "")
    if task == coordination_leader(cluster):
        where.append("the chief")
    return f"{job} {index}" + (f" ({', '.join(where)})" if where else "")


def split_cpu(replicas):
    """Split the CPU into `replicas` logical devices, so data-parallel training runs on any machine."""
    import tensorflow as tf

    if replicas < 1:
        raise UserError(f"--cpu-replicas must be at least 1, got {replicas}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
    except RuntimeError:
        if len(tf.config.list_logical_devices("CPU")) != replicas:
            raise UserError("--cpu-replicas must be set before TensorFlow starts; run mt train in a fresh "
                            "process") from None


def is_chief(strategy):
    """True on the one task that writes the run folder (the chief, or worker 0 without a chief)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def chief_in_tf_config():
    """True when this process is the chief by TF_CONFIG (no cluster of several tasks, the chief task, or
    worker 0 of a cluster without a chief): the answer of `is_chief`, before a strategy exists."""
    config = cluster_spec()
    cluster = config.get("cluster", {})
    if sum(len(v) for v in cluster.values()) <= 1:
        return True
    task = config.get("task", {})
    kind, index = task.get("type"), int(task.get("index", 0))
    return kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)


def worker_folder(run_dir, chief):
    """Where this task writes: the run folder on the chief, a new temporary folder on the others, held by
    this process until `remove_worker_folder`. The folders of workers that died without removing theirs
    (SIGKILL, a crash) are removed first."""
    if chief:
        return run_dir
    remove_abandoned_worker_folders()
    path = tempfile.mkdtemp(prefix=WORKER_FOLDER_PREFIX)
    _HELD[path] = RunFolder(path).hold()
    return path


def remove_worker_folder(folder, chief):
    if chief:
        return
    shutil.rmtree(folder, ignore_errors=True)
    fd = _HELD.pop(folder, None)
    if fd is not None:
        os.close(fd)


def remove_abandoned_worker_folders(root=None):
    """Remove the worker folders in `root` (the temporary folder) that no living process holds: the
    kernel released their locks when their workers died. Returns their paths."""
    root = root or tempfile.gettempdir()
    removed = []
    try:
        names = os.listdir(root)
    except OSError:
        return removed
    for name in names:
        path = os.path.join(root, name)
        if not name.startswith(WORKER_FOLDER_PREFIX) or path in _HELD or not os.path.isdir(path):
            continue
        try:
            fd = RunFolder(path).hold()
        except (UserError, OSError):
            continue  # a living worker's (or another user's) folder
        try:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        finally:
            os.close(fd)
    return removed
