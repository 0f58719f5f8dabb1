"""Distribution strategies: one device, all local GPUs, or several hosts (TF_CONFIG).

`--strategy=auto` picks `multi_worker` when TF_CONFIG names more than one worker, `mirrored` when
more than one GPU is visible, else `default`. `--batch_size` is always the *global* batch.
Create the strategy before any other TensorFlow work in the process (MultiWorkerMirroredStrategy
must start its collective runtime first).
"""
import os
import pathlib
from typing import Optional

import keras
import tensorflow as tf

from aalp_tf.errors import UsageError
from aalp_tf.registry import Registry

STRATEGIES = Registry("strategy")
STRATEGIES.add("default", lambda: tf.distribute.get_strategy())
STRATEGIES.add("mirrored", lambda: tf.distribute.MirroredStrategy())
STRATEGIES.add("multi_worker", lambda: tf.distribute.MultiWorkerMirroredStrategy())


def _cluster() -> tf.train.ClusterSpec:
    """TF_CONFIG's cluster, read by TensorFlow's own resolver (the one MultiWorkerMirroredStrategy
    reads it with); an empty one without TF_CONFIG."""
    try:
        return tf.distribute.cluster_resolver.TFConfigClusterResolver().cluster_spec()
    except ValueError:  # json's error, which does not say what TF_CONFIG should hold
        raise UsageError(f"TF_CONFIG is not JSON: received {os.environ['TF_CONFIG'][:60]!r}; "
                         'accepted: {"cluster": {"worker": ["host:port", ...]}, "task": '
                         '{"type": "worker", "index": 0}}') from None


def _num_workers() -> int:
    cluster = _cluster()
    return sum(cluster.num_tasks(job) for job in ("chief", "worker") if job in cluster.jobs)


def resolve(name: str) -> str:
    """The strategy `auto` stands for on this machine; other names pass through."""
    if name != "auto":
        STRATEGIES.get(name)
        return name
    if _num_workers() > 1:
        return "multi_worker"
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return "mirrored"
    return "default"


_CREATED = {}  # a process makes its strategy once (MultiWorkerMirroredStrategy can only start once)


def strategy_for(name: str) -> tf.distribute.Strategy:
    """The process' strategy for `--strategy=name`, created on first use."""
    resolved = resolve(name)
    if resolved not in _CREATED:
        if resolved == "multi_worker" and _num_workers() < 1:
            raise UsageError("--strategy=multi_worker needs TF_CONFIG naming the workers; "
                             "received none (see README, 'Several hosts')")
        _CREATED[resolved] = STRATEGIES.get(resolved)()
    return _CREATED[resolved]


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the one process that writes shared outputs (history, exports, TensorBoard): the
    strategy's own answer (the chief, else worker 0; always True on one host)."""
    return strategy.extended.should_checkpoint


def worker_dir(strategy: tf.distribute.Strategy, model_dir: str) -> pathlib.Path:
    """Where this process keeps its checkpoints: the run folder on the chief, a subfolder else.

    Every worker saves (and restores) its own copy, so hosts without a shared file system can
    resume too; all copies hold the same weights, epoch by epoch.
    """
    root = pathlib.Path(model_dir)
    if is_chief(strategy):
        return root
    resolver = strategy.cluster_resolver
    return root / "workers" / f"{resolver.task_type}_{resolver.task_id}"


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return (strategy.num_replicas_in_sync > 1
            and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy))


def agree_on_epoch(strategy: tf.distribute.Strategy, epoch: int) -> int:
    """The smallest completed epoch among all workers (a kill may leave one a checkpoint behind)."""
    if not is_multi_worker(strategy):
        return epoch
    value = strategy.run(lambda: tf.constant([epoch], tf.int64))
    return int(tf.reduce_min(strategy.gather(value, axis=0)))  # ReduceOp has no MIN


def set_precision(mixed_precision: bool) -> Optional[str]:
    """Keras' mixed_float16 policy on GPUs; float32 on CPU, where float16 only slows things.

    Returns a note for the user when mixed precision was asked for but is off.
    """
    if not mixed_precision:
        keras.mixed_precision.set_global_policy("float32")
        return None
    if not tf.config.list_physical_devices("GPU"):
        keras.mixed_precision.set_global_policy("float32")
        return "--mixed_precision is off: no GPU is visible (float16 is slower on CPU)"
    keras.mixed_precision.set_global_policy("mixed_float16")
    return None


def check_batch(batch_size: int, strategy: tf.distribute.Strategy) -> None:
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise UsageError(f"--batch_size={batch_size} (the global batch) must divide evenly over "
                         f"the {replicas} replicas; accepted: a multiple of {replicas}")


class MultiWorkerFit:
    """Mixed into a keras.Model (before it): keras-team/keras#20585, model.fit under
    MultiWorkerMirroredStrategy.

    With Keras 3.15, fit() under MultiWorkerMirroredStrategy fails twice out of the box:
    `_maybe_symbolic_build` reduces the first PerReplica batch and cannot, then
    `reduce_per_replica` reduces every scalar log with axis=0. The model is built (layers and
    optimizer) before fit, so there is nothing to build symbolically; and `logs_of` returns
    logs with shape [1] under that strategy, which the axis-0 reduction turns back into scalars
    (every replica holds the same synchronised metric values, so the mean is exact).
    tests/test_distributed.py fails when either half stops being needed or stops working.
    """

    WORK_AROUND_KERAS_20585 = True

    def _multi_worker(self):
        return self.WORK_AROUND_KERAS_20585 and isinstance(
            self.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._multi_worker() and self.built and self.optimizer.built:
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def logs_of(self, trackers: dict) -> dict:
        """The trackers' results as train_step / test_step return them."""
        results = {name: tracker.result() for name, tracker in trackers.items()}
        if self._multi_worker():
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results
