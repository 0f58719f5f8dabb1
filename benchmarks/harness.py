"""What every benchmark script shares: side-by-side timing, ratios, the machine, markdown.

Timing rules (benchmarks/RESULTS.md): one process, every variant warmed up (traced) first, then
rounds in which each variant runs once, the order rotated every round so drift and the other
processes on the machine hit all variants alike. A ratio is the median over rounds of the
per-round ratio (both sides timed within the same round), which cancels slow drift.
"""
import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Sequence

import numpy as np

# Scripts run as `python -m benchmarks.NAME` from the repository top, so the package comes from
# the work tree. It is imported before TensorFlow, so that TF starts with the package's settings
# (oneDNN on: aalp_tf/__init__.py); every script imports this module before tensorflow for that.
import aalp_tf  # noqa: F401


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true",
                   help="tiny shapes and few rounds: checks the script runs (< 1 min)")
    p.add_argument("--repeats", type=int, default=0, help="timed rounds (0: the script's default)")
    return p


def sync(result):
    """Blocks until `result` is computed (tf.function calls return before on some devices)."""
    import tensorflow as tf
    for value in tf.nest.flatten(result):
        if hasattr(value, "numpy"):
            value.numpy()
            return


def interleaved(variants: Dict[str, Callable[[], object]], *, repeats: int,
                warmup: int = 1) -> Dict[str, List[float]]:
    """Seconds per call of each variant, over `repeats` rotated rounds after `warmup` calls."""
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            sync(variants[name]())
    times = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            sync(variants[name]())
            times[name].append(time.perf_counter() - start)
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def paired_ratio(times: Dict[str, List[float]], numerator: Callable[[int], float],
                 denominator: Callable[[int], float]) -> float:
    """Median over rounds of numerator(round) / denominator(round)."""
    rounds = len(next(iter(times.values())))
    return median([numerator(r) / denominator(r) for r in range(rounds)])


def spread(values: Sequence[float]) -> str:
    """'min-max' of per-round values, to show how noisy a median is."""
    return f"{min(values):.2f}-{max(values):.2f}"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> str:
    """One markdown line: date, CPU, cores, load, TF/Keras versions."""
    import keras
    import tensorflow as tf
    from tensorflow.python.util import _pywrap_util_port
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    onednn = "on" if _pywrap_util_port.IsMklEnabled() else "off"
    return (f"{datetime.datetime.now().isoformat(timespec='minutes')}; CPU: {cpu_model()}, "
            f"{os.cpu_count()} cores; load average (1, 5, 15 min): {load}; "
            f"TF {tf.__version__} (oneDNN {onednn}), Keras {keras.__version__}, "
            f"Python {platform.python_version()}")


def command() -> str:
    return "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])


def header(title: str) -> None:
    print(f"\n### {title}\n\n`{command()}`\n\n{machine()}\n")


def table(columns: Sequence[str], rows: Sequence[Sequence]) -> None:
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    print()


def random_batch(shape, batch: int, *, seed: int = 0, num_classes: int = 10):
    """Float images in [0, 1] and int64 labels as tensors."""
    import tensorflow as tf
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, size=(batch, *shape)).astype(np.float32)
    y = rng.integers(0, num_classes, size=batch).astype(np.int64)
    return tf.constant(x), tf.constant(y)


def peak_rss_of_child(argv: Sequence[str], timeout: float) -> float:
    """Peak resident memory (MiB) of one child process, via RUSAGE_CHILDREN in a fresh
    interpreter (so each configuration is the only child ever measured there)."""
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
             "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", probe, *argv], check=True, capture_output=True,
                         text=True, timeout=timeout)
    return int(out.stdout.strip().splitlines()[-1]) / 1024.0  # Linux reports KiB


def profiled(fn, logdir: str):
    """Runs fn once under the TF profiler; returns (wall seconds, host events).

    Events are (thread line, event name, start ns, duration ns) read from the XSpace the
    profiler writes into logdir (what TensorBoard's trace viewer shows). A TF op's event is
    named "op name:op type"; tf.data's waits show as IteratorGetNextOp::DoCompute.
    """
    import glob
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2
    tf.profiler.experimental.start(logdir, options=tf.profiler.experimental.ProfilerOptions(
        host_tracer_level=2))
    start = time.perf_counter()
    sync(fn())
    wall = time.perf_counter() - start
    tf.profiler.experimental.stop()
    path = sorted(glob.glob(os.path.join(logdir, "plugins/profile/*/*.xplane.pb")))[-1]
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    events = []
    for plane in space.planes:
        names = plane.event_metadata
        for line in plane.lines:
            base = line.timestamp_ns
            events += [(line.name, names[e.metadata_id].name, base + e.offset_ps / 1e3,
                        e.duration_ps / 1e3) for e in line.events]
    return wall, events


def kernel_events(events):
    """(op type, start ns, duration ns) of the TF op kernels among `profiled`'s events. Kernels
    are named "op name:op type" on the compute threads; runtime events such as
    "ExecutorState::Process" (which spans the kernels it runs) are not kernels."""
    return [(n.rsplit(":", 1)[1], s, d) for line, n, s, d in events
            if n.count(":") == 1 and not line.startswith("python")]


def union_ns(intervals) -> float:
    """Total length of the union of (start, end) intervals."""
    total, end = 0.0, float("-inf")
    for s, e in sorted(intervals):
        if e > end:
            total += e - max(s, end)
            end = e
    return total


# ---- the paper's two set-ups, as configs the package builds its model from -----------------

# model -> the dataset whose paper settings (aalp_tf.paper) it is trained with
SETUPS = {"lenet": "mnist", "resnet32": "cifar10"}


def paper_steps(model: str) -> int:
    """The training PGD steps of the model's paper set-up."""
    from aalp_tf import paper

    return paper.paper_settings(SETUPS[model])["attack_steps"]


def run_config(model: str, method: str, *, width: int = 0, steps: int = 0, batch: int = 128,
               guided_dropout: bool = False, jit_compile: bool = False):
    """The RunConfig `python -m aalp_tf.train --dataset=D --method=M` would resolve (model
    width and PGD steps overridable, for quick runs; no validation slice, so the last epoch is
    the one exported)."""
    from aalp_tf import paper
    from aalp_tf.config import (AttackConfig, DataConfig, MethodConfig, ModelConfig, RunConfig,
                                TrainConfig)
    dataset = SETUPS[model]
    settings = paper.paper_settings(dataset)
    return RunConfig(
        data=DataConfig(dataset=dataset, batch_size=batch, val_examples=0),
        model=ModelConfig(name=model, width=width),
        method=MethodConfig(name=method, guided_dropout=guided_dropout),
        attack=AttackConfig(epsilon=settings["epsilon"], step_size=settings["step_size"],
                            steps=steps or settings["attack_steps"]),
        train=TrainConfig(epochs=1, learning_rate=settings["learning_rate"], model_dir="unused",
                          jit_compile=jit_compile, deterministic=not jit_compile,
                          export_epoch="last"))


def build(cfg):
    """trainer.build_model for cfg, and the dataset's spec."""
    from aalp_tf.data.datasets import DATASETS
    from aalp_tf.trainer import build_model
    spec = DATASETS.get(cfg.data.dataset)
    return build_model(cfg, spec), spec


def train_step_function(model):
    """model.train_step traced the way Keras' fit traces it (keras/src/backend/tensorflow/
    trainer.py: tf.function(reduce_retracing=True, jit_compile=model.jit_compile))."""
    import tensorflow as tf
    return tf.function(model.train_step, reduce_retracing=True, jit_compile=model.jit_compile)


def input_gradient_function(model, *, jit_compile: bool = False):
    """The floor's unit: d CE / d images for a batch, the model in inference mode, nothing else."""
    import tensorflow as tf

    @tf.function(jit_compile=jit_compile)
    def input_gradient(x, y):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=y, logits=model(x, training=False)))
        return tape.gradient(loss, x)

    return input_gradient
