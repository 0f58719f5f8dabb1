"""Question 5: the share of a training step spent waiting on data (goal < 5%).

    python -m benchmarks.input_pipeline            # MNIST/LeNet and CIFAR-10/ResNet32 shapes
    python -m benchmarks.input_pipeline --quick    # MNIST shapes, width-4 LeNet (< 1 min)

Data: synthetic uint8 arrays of the original sizes (MNIST 60000 + 10000 28x28x1, CIFAR-10
50000 + 10000 32x32x3) through `datasets.make_data(..., arrays=ArraySplits(...))`, the
pipeline `train` uses (CIFAR-10: per-example crop + flip; MNIST: whole-batch gathers).
  producer   ms per batch pulled from the training pipeline alone, nothing else running
  waiting    Keras' compiled train function (model.make_train_function, the one fit runs) over
             blocks of steps fed by our pipeline vs by one batch held in memory
             (Dataset.from_tensors(batch).repeat(), no producer work at all); waiting share =
             1 - in-memory / ours, per pair of blocks, median. The blocks alternate, so our
             pipeline refills its prefetch buffers while the in-memory block runs: each block
             first takes `skip` untimed steps that drain what was produced in advance, so the
             timed steps are the steady state.
  bound      producer ms alone / step ms: on a CPU-bound machine the producer's work can at most
             add its own time to a step, so this bounds the share from above.
  profiled   one more block of steps on our pipeline under the TF profiler: the time the step's
             IteratorGetNext blocked (IteratorGetNextOp::DoCompute events) / wall time. This is
             the waiting itself, free of the block-to-block noise of the comparison above.
Method `natural` (no attack) is the worst case: its step is the cheapest, so the data's share is
the largest; an adversarial step costs k + 1 or more times as much for the same batch.
"""
import shutil
import tempfile
import time

from benchmarks import harness  # first: it imports aalp_tf before TensorFlow starts (oneDNN)

import numpy as np
import tensorflow as tf

from aalp_tf.experiment import training
from aalp_tf.data.readers import ArraySplits
from aalp_tf.data.datasets import make_data

SIZES = {"lenet": ((28, 28, 1), 60000, 10000), "resnet32": ((32, 32, 3), 50000, 10000)}
GOAL = 0.05


def synthetic(arch, scale=1.0):
    shape, n_train, n_test = SIZES[arch]
    rng = np.random.default_rng(0)
    n_train, n_test = int(n_train * scale), int(n_test * scale)
    return ArraySplits(x_train=rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
                       y_train=rng.integers(0, 10, n_train).astype(np.int64),
                       x_test=rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
                       y_test=rng.integers(0, 10, n_test).astype(np.int64))


def producer_ms(dataset, batches):
    it = iter(dataset)
    for _ in range(5):  # the epoch's permutation and the first fills
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return 1e3 * (time.perf_counter() - start) / batches


def timed_block(train_function, iterator, *, skip, steps):
    """Seconds for `steps` training steps, after `skip` untimed ones."""
    for _ in range(skip):
        train_function(iterator)
    start = time.perf_counter()
    for _ in range(steps):
        out = train_function(iterator)
    float(out["loss"])  # Keras unwraps the step's Optional for a tf.data iterator
    return time.perf_counter() - start


def measure(arch, *, width, block_steps, skip, repeats, scale):
    cfg = harness.run_config(arch, "natural", width=width)
    arrays = synthetic(arch, scale)
    data = make_data(cfg.data, seed=0, epochs=50, arrays=arrays)
    producer = producer_ms(data.train, 3 * block_steps)
    model, _ = harness.build(cfg)
    model.make_train_function()
    iterators = {"ours": iter(data.train),
                 "in memory": iter(tf.data.Dataset.from_tensors(next(iter(data.train))).repeat())}
    times = {name: [] for name in iterators}
    for name, it in iterators.items():  # warm-up: trace, and the epoch's first fills
        timed_block(model.train_function, it, skip=skip, steps=1)
    for r in range(repeats):
        for name in list(iterators)[r % 2:] + list(iterators)[:r % 2]:
            times[name].append(timed_block(model.train_function, iterators[name], skip=skip,
                                           steps=block_steps))
    logdir = tempfile.mkdtemp(prefix="aalp_pipeline_profile_")
    wall, events = harness.profiled(
        lambda: timed_block(model.train_function, iterators["ours"], skip=0, steps=block_steps),
        logdir)
    waited = sum(d for _, n, _, d in events if n == "IteratorGetNextOp::DoCompute") / 1e9
    shutil.rmtree(logdir, ignore_errors=True)
    shares = [1 - m / o for m, o in zip(times["in memory"], times["ours"])]
    share = harness.median(shares)
    step_ms = 1e3 * harness.median(times["in memory"]) / block_steps
    return [arch, cfg.data.batch_size, f"{producer:.1f}", f"{step_ms:.1f}",
            f"{1e3 * harness.median(times['ours']) / block_steps:.1f}",
            f"**{100 * share:.1f}%**", f"{100 * min(shares):.1f}..{100 * max(shares):.1f}%",
            f"{100 * producer / step_ms:.1f}%", f"**{100 * waited / wall:.2f}%**",
            "yes" if waited / wall < GOAL else "NO"]


def main():
    p = harness.parser(__doc__.splitlines()[0])
    p.add_argument("--models", default="lenet,resnet32")
    args = p.parse_args()
    training.seed_everything(0, deterministic=True)  # as `train` runs by default
    harness.header("Input pipeline: waiting on data")
    if args.quick:
        plan = [("lenet", 4, 10, 5, 0.1)]
    else:  # (model, width, timed steps per block, untimed steps first, data scale)
        plan = [(a, 0, 40, 20, 1.0) if a == "lenet" else (a, 0, 10, 6, 1.0)
                for a in args.models.split(",")]
    repeats = args.repeats or (3 if args.quick else 7)
    rows = [measure(arch, width=width, block_steps=steps, skip=skip, repeats=repeats,
                    scale=scale) for arch, width, steps, skip, scale in plan]
    harness.table(["model (natural)", "batch", "producer ms/batch alone",
                   "step ms, in-memory batch", "step ms, our pipeline",
                   f"waiting share (goal < {100 * GOAL:.0f}%)", "per-round range",
                   "bound: producer / step", f"profiled get_next wait (goal < {100 * GOAL:.0f}%)",
                   "goal met"],
                  rows)


if __name__ == "__main__":
    main()
