"""Choosing a tf.distribute strategy, and which worker writes the run folder.

    auto          MultiWorkerMirroredStrategy when TF_CONFIG names a cluster of several tasks,
                  MirroredStrategy when several GPUs are visible, else one device
    one           one device (the first GPU, else the CPU)
    mirrored      all local GPUs, or N logical CPU devices with --cpu-replicas N
    multi-worker  MultiWorkerMirroredStrategy over the cluster in TF_CONFIG
    tpu           TPUStrategy where a TPU cluster resolver answers

Everything here must run before TensorFlow initializes its devices (before the first op).
"""

import json
import os
import shutil
import tempfile

from mt.errors import UserError
from mt.runtime import native_bfloat16

STRATEGIES = ("auto", "one", "mirrored", "multi-worker", "tpu")


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


def make_strategy(name, cpu_replicas=0, precision="float32"):
    """Create the strategy (and the mixed precision policy) before any model is built."""
    import keras
    import tensorflow as tf

    if name not in STRATEGIES:
        raise UserError(f"--strategy must be one of {', '.join(STRATEGIES)}; got '{name}'")
    cluster = cluster_spec().get("cluster", {})
    tasks = sum(len(v) for v in cluster.values())
    gpus = tf.config.list_physical_devices("GPU")  # (listing logical devices would start the runtime)
    if name == "auto":
        name = "multi-worker" if tasks > 1 else "mirrored" if len(gpus) > 1 or cpu_replicas > 1 else "one"
    strategy = _create(name, tasks, cpu_replicas, gpus)
    keras.mixed_precision.set_global_policy(precision)
    return strategy


def _create(name, tasks, cpu_replicas, gpus):
    import tensorflow as tf

    if name == "multi-worker":  # collective ops must be set up before anything else starts the runtime
        if tasks < 1:
            raise UserError("--strategy multi-worker needs TF_CONFIG naming the cluster; see docs/distributed.md")
        if cpu_replicas:
            raise UserError("--cpu-replicas is for one machine; with multi-worker each worker is one replica")
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
    """Where this task writes: the run folder on the chief, a temporary folder on the others."""
    if chief:
        return run_dir
    return tempfile.mkdtemp(prefix="mt-worker-")


def remove_worker_folder(folder, chief):
    if not chief:
        shutil.rmtree(folder, ignore_errors=True)
