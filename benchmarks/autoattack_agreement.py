"""Our `autoattack` against the official AutoAttack (Croce & Hein's PyTorch code, `pyautoattack`)
on the same SavedModel and the same images: robust accuracy after each attack, the images where
the two disagree, and each one's time.

    pip install -e ".[crosscheck]"     # torch==2.13.0 and pyautoattack==0.2.0
    python -m benchmarks.autoattack_agreement --model=EXPORT/1 --source_dir=../shared/datasets/mnist \
        --examples=1000 --epsilon=0.3 --norm=linf --work_dir=../agreement_work \
        --output=benchmarks/results/autoattack_agreement/linf.json
    python -m benchmarks.autoattack_agreement --quick   # tiny model and budgets (< 1 min)

The official code sees our model through a bridge: a torch.autograd.Function whose forward pass
and vector-Jacobian product run the SavedModel in TensorFlow (images NCHW on the torch side,
NHWC on ours). Its version is 'standard' with its own settings; only --quick shrinks its step
and query counts, to ours. The bridge runs the forward pass again in each backward (TF keeps no
tape between calls), so the official figure's time includes about one extra forward pass per
gradient: an upper bound on what it would take natively. Times are given as wall seconds and as CPU
seconds of this process (user + system, every thread): on a machine shared with other jobs only
the second is a fair comparison. With --work_dir a finished side is kept and reused by a rerun
with the same settings. The floor column is what the attack's model passes alone cost (each
attack's count of forward passes and input gradients on the points it attacks, at the CPU
seconds per image measured here): where an attack breaks few points, no implementation of
the same computation takes less (where it breaks many, the points that drop out make the floor
an overestimate).

Ours runs the standard sequence attack by attack on the images the earlier ones left correct,
as `autoattack.autoattack` does in one graph: with per-example seeds (attacks.example_seeds:
seed, image index) the two give the same points, and per-attack times need the split.
"""
from benchmarks import harness  # first: it imports aalp_tf before TensorFlow starts (oneDNN)

import functools
import json
import logging
import pathlib
import re
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf

from aalp_tf import attacks
from aalp_tf.evaluation import autoattack
from aalp_tf.files import write_atomically

SEQUENCE = ("apgd-ce", "apgd-t", "fab-t", "square")
STANDARD = dict(steps=100, fab_steps=100, queries=5000)
QUICK = dict(steps=5, fab_steps=5, queries=30)


def _official_available():
    try:
        import pyautoattack  # noqa: F401
        import torch  # noqa: F401
    except ImportError as err:
        return str(err)
    return None


# ---- ours -----------------------------------------------------------------------------------


def our_attacks(logits_fn, shape, *, epsilon, norm, seed, steps, fab_steps, queries):
    """The standard sequence's attacks as tf.functions (x, y, index) -> x_adv, exactly as
    autoattack.autoattack calls them (same random streams, per-example seeds)."""
    settings = dict(epsilon=epsilon, norm=norm)
    fns = {"apgd-ce": functools.partial(autoattack.apgd_ce, steps=steps, **settings),
           "apgd-t": functools.partial(autoattack.apgd_t, steps=steps, **settings),
           "fab-t": functools.partial(autoattack.fab_t, steps=fab_steps, **settings),
           "square": functools.partial(autoattack.square, queries=queries,
                                       rescale_schedule=False, **settings)}
    signature = [tf.TensorSpec([None, *shape], tf.float32), tf.TensorSpec([None], tf.int64),
                 tf.TensorSpec([None], tf.int64)]
    return {name: tf.function(
        lambda x, y, i, fn=fn: fn(logits_fn, x, y, seed=attacks.example_seeds(seed, i)),
        input_signature=signature) for name, fn in fns.items()}


def predict(logits_fn, x, batch):
    return np.concatenate([np.argmax(logits_fn(tf.constant(x[i:i + batch])).numpy(), -1)
                           for i in range(0, len(x), batch)])


class Clock:
    """Wall and CPU seconds (user + system of every thread of this process) since it started:
    the CPU figure holds on a machine shared with other jobs, where wall time does not."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> dict:
        return {"wall": time.perf_counter() - self.wall, "cpu": time.process_time() - self.cpu}


def run_ours(logits_fn, x, y, fns, *, batch, epsilon, norm):
    """(robust [N] bool after each attack, {attack: {"wall", "cpu"} seconds}). A point counts
    only if a fresh forward pass misclassifies it and it lies in the ball, as the official one
    is checked."""
    robust = predict(logits_fn, x, batch) == y
    after, seconds = {"clean": robust.copy()}, {}
    for name in SEQUENCE:
        clock = Clock()
        left = np.flatnonzero(robust)
        for i in range(0, len(left), batch):
            index = left[i:i + batch]
            x_adv = fns[name](tf.constant(x[index]), tf.constant(y[index]), tf.constant(index))
            inside = threat_distance(x_adv.numpy() - x[index], norm) <= epsilon * (1 + 1e-4)
            fooled = (np.argmax(logits_fn(x_adv).numpy(), -1) != y[index]) & inside
            robust[index[fooled]] = False
        seconds[name] = clock.read()
        after[name] = robust.copy()
        print(f"ours: robust accuracy after {name}: {100 * robust.mean():.2f}% "
              f"({seconds[name]['wall']:.1f} s, {seconds[name]['cpu']:.1f} CPU-s)",
              file=sys.stderr, flush=True)
    return after, seconds


def pass_costs(logits_fn, x, y, *, repeats=10) -> dict:
    """CPU seconds per image of one forward pass and of one input gradient (forward + backward)
    of the model, each a tf.function over the batch `x`, as the attacks call them."""
    x, y = tf.constant(x), tf.constant(y, tf.int64)
    objective = attacks.cross_entropy_objective(y)
    passes = {"forward": tf.function(logits_fn),
              "gradient": tf.function(lambda images: attacks.input_gradient(
                  logits_fn, images, objective)[0])}
    costs = {}
    for name, fn in passes.items():
        fn(x)  # traced outside the clock
        start = time.process_time()
        for _ in range(repeats):
            fn(x).numpy()
        costs[name] = (time.process_time() - start) / repeats / len(y)
    return costs


def floor_seconds(costs: dict, after: dict, budget: dict, num_classes: int) -> dict:
    """{attack: CPU seconds its passes alone cost}: the points it attacks (those still robust
    before it) times its passes per point (APGD: a gradient per step; APGD-T and FAB-T: that
    per target; FAB also a forward per step; Square: a forward per query), at `costs`. It counts
    every target and query on every point the attack starts with; the points an earlier target
    or query breaks drop out, so where an attack breaks many points the floor overestimates it.
    Where it breaks few (a robust model), no implementation of the same computation takes less.
    """
    targets = min(autoattack.TARGETS, num_classes - 1)
    passes = {"apgd-ce": budget["steps"] * costs["gradient"],
              "apgd-t": targets * budget["steps"] * costs["gradient"],
              "fab-t": targets * budget["fab_steps"] * (costs["gradient"] + costs["forward"]),
              "square": budget["queries"] * costs["forward"]}
    before = ["clean", *SEQUENCE]
    return {name: float(after[before[i]].sum()) * passes[name]
            for i, name in enumerate(SEQUENCE)}


# ---- the official code through the bridge ---------------------------------------------------


def torch_bridge(logits_fn, shape):
    """A torch.nn.Module (NCHW float images -> logits) whose forward pass and vector-Jacobian
    product run `logits_fn` in TensorFlow."""
    import torch

    spec = tf.TensorSpec([None, *shape], tf.float32)
    forward = tf.function(logits_fn, input_signature=[spec])

    @tf.function(input_signature=[spec, tf.TensorSpec([None, None], tf.float32)])
    def vjp(x, upstream):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            logits = logits_fn(x)
        return tape.gradient(logits, x, output_gradients=upstream)

    to_tf = lambda t: tf.constant(t.detach().cpu().numpy().transpose(0, 2, 3, 1))

    class TFLogits(torch.autograd.Function):
        @staticmethod
        def forward(ctx, images):
            ctx.save_for_backward(images)
            return torch.from_numpy(forward(to_tf(images)).numpy())

        @staticmethod
        def backward(ctx, upstream):
            (images,) = ctx.saved_tensors
            grad = vjp(to_tf(images), tf.constant(upstream.detach().cpu().numpy()))
            return torch.from_numpy(grad.numpy().transpose(0, 3, 1, 2).copy())

    class Bridge(torch.nn.Module):
        def forward(self, images):
            return TFLogits.apply(images)

    return Bridge()


class _Lines(logging.Handler):
    """Collects the official code's 'robust accuracy after X: a% (total time t s)' lines:
    {attack: (robust accuracy, cumulative wall s, cumulative CPU s)}."""

    def __init__(self, clock):
        super().__init__(logging.DEBUG)
        self.after, self.clock = {}, clock

    def emit(self, record):
        found = re.match(r"robust accuracy after ([\w-]+): ([\d.]+)% \(total time ([\d.]+) s\)",
                         record.getMessage())
        if found:
            self.after[found[1].lower()] = (float(found[2]) / 100, float(found[3]),
                                            self.clock.read()["cpu"])


def run_official(logits_fn, x, y, *, shape, epsilon, norm, seed, batch, budget):
    """(robust [N] bool at the end, {attack: (robust accuracy after it, cumulative wall s,
    cumulative CPU s)}, {"wall", "cpu"} seconds in all)."""
    import torch
    from pyautoattack import AutoAttack

    official = AutoAttack(torch_bridge(logits_fn, shape), norm={"linf": "Linf", "l2": "L2"}[norm],
                          eps=epsilon, version="standard", seed=seed, device="cpu")
    if budget != STANDARD:  # --quick only: the official sequence at our shrunk counts
        official.apgd.n_iter = official.apgd_targeted.n_iter = budget["steps"]
        official.fab.n_iter, official.square.n_queries = budget["fab_steps"], budget["queries"]
    clock = Clock()
    lines = _Lines(clock)
    logger = logging.getLogger("auto-attack")
    logger.addHandler(lines)
    logger.setLevel(logging.DEBUG)
    x_adv, _ = official.run_standard_evaluation(
        torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(y), batch_size=batch)
    seconds = clock.read()
    logger.removeHandler(lines)
    x_adv = x_adv.numpy().transpose(0, 2, 3, 1)
    distance = threat_distance(x_adv - x, norm)
    robust = (predict(logits_fn, x_adv, batch) == y) | (distance > epsilon * (1 + 1e-4))
    return robust, lines.after, seconds


def reuse(work_dir, side, key, run):
    """run()'s result, kept in work_dir/<side>.json and reused while `key` (the settings) is the
    same; without work_dir, run() every time. Boolean arrays round-trip as lists."""
    path = pathlib.Path(work_dir) / f"{side}.json" if work_dir else None
    if path and path.exists():
        kept = json.loads(path.read_text())
        if kept["key"] == key:
            print(f"{side}: reusing {path}", file=sys.stderr, flush=True)
            return tuple(_from_json(part) for part in kept["result"])
    result = run()
    if path:
        write_atomically(path, json.dumps({"key": key, "result": [_to_json(part) for part in
                                                                   result]}))
    return result


def _to_json(value):
    if isinstance(value, np.ndarray):
        return {"bool_array": value.tolist()}
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    return value


def _from_json(value):
    if isinstance(value, dict):
        if set(value) == {"bool_array"}:
            return np.array(value["bool_array"], dtype=bool)
        return {k: _from_json(v) for k, v in value.items()}
    return value


def threat_distance(delta, norm):
    return attacks.threat_model(norm).norm(tf.constant(delta)).numpy()


# ---- the comparison -------------------------------------------------------------------------


def report(ours, our_seconds, official, official_after, official_seconds, floor):
    """Markdown tables and the JSON record."""
    n = len(ours["clean"])
    rows, before, theirs = [], (0.0, 0.0), float(official.mean())
    for name in SEQUENCE:
        # the official code logs nothing for attacks it skips once no image is left
        theirs, *at = official_after.get(name, (theirs, *before))
        rows.append([name, f"{100 * ours[name].mean():.2f}%", f"{100 * theirs:.2f}%",
                     f"{our_seconds[name]['wall']:.1f}", f"{our_seconds[name]['cpu']:.1f}",
                     f"{floor[name]:.1f}", f"{at[0] - before[0]:.1f}",
                     f"{at[1] - before[1]:.1f}"])
        before = at
    final = ours[SEQUENCE[-1]]
    ours_only = np.flatnonzero(~final & official)  # we broke it, the official code did not
    theirs_only = np.flatnonzero(final & ~official)
    total = {k: sum(s[k] for s in our_seconds.values()) for k in ("wall", "cpu")}
    rows.append(["**overall**", f"**{100 * final.mean():.2f}%**",
                 f"**{100 * official.mean():.2f}%**", f"**{total['wall']:.1f}**",
                 f"**{total['cpu']:.1f}**", f"**{sum(floor.values()):.1f}**",
                 f"**{official_seconds['wall']:.1f}**", f"**{official_seconds['cpu']:.1f}**"])
    harness.table(["attack", "ours: robust accuracy after it", "official", "ours: s",
                   "ours: CPU-s", "floor: CPU-s", "official: s", "official: CPU-s"], rows)
    gap = 100 * (final.mean() - official.mean())
    ratio = {k: official_seconds[k] / max(total[k], 1e-9) for k in total}
    print(f"{n} images; clean accuracy {100 * ours['clean'].mean():.2f}%. Ours minus official: "
          f"{gap:+.2f} points; official time / ours: {ratio['wall']:.2f}x wall, "
          f"{ratio['cpu']:.2f}x CPU; at the floor of the model's passes it would be "
          f"{official_seconds['cpu'] / max(sum(floor.values()), 1e-9):.2f}x CPU."
          f"\nBroken by ours only: {ours_only.tolist()}\n"
          f"Broken by the official code only: {theirs_only.tolist()}")
    return {"examples": n, "clean_accuracy": float(ours["clean"].mean()),
            "ours": {name: float(ours[name].mean()) for name in SEQUENCE},
            "official_after": {name: list(official_after[name]) for name in official_after},
            "ours_overall": float(final.mean()), "official_overall": float(official.mean()),
            "ours_seconds": our_seconds, "official_seconds": official_seconds,
            "floor_cpu_seconds": floor,
            "broken_by_ours_only": ours_only.tolist(),
            "broken_by_official_only": theirs_only.tolist()}


def _quick_model(folder):
    """A small dense model fitted for seconds on images whose class is a bright patch."""
    import keras
    from aalp_tf import signatures

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 600)
    images = rng.uniform(0, 0.2, (600, 28, 28, 1)).astype(np.float32)
    for i, label in enumerate(labels):
        row, col = divmod(int(label), 4)
        images[i, 2 + 8 * row:10 + 8 * row, 1 + 7 * col:7 + 7 * col] = 0.9
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images[:500], labels[:500], epochs=3, verbose=0)
    path = signatures.write(model, pathlib.Path(folder) / "1", image_shape=(28, 28, 1))
    return path, images[500:516], labels[500:516].astype(np.int64)


def main():
    p = harness.parser(__doc__.splitlines()[0])
    p.add_argument("--model", help="a SavedModel folder (serving_default: images -> logits)")
    p.add_argument("--source_dir", default="../shared/datasets/mnist", help="MNIST's files")
    p.add_argument("--examples", type=int, default=1000, help="the first N test images")
    p.add_argument("--epsilon", type=float, default=None, help="default 0.3 (--quick: 0.05)")
    p.add_argument("--norm", choices=sorted(attacks.THREAT_MODELS), default="linf")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch_size", type=int, default=250, help="the official default")
    p.add_argument("--output", help="write the JSON record here")
    p.add_argument("--work_dir", help="keep each side's finished result here (ours.json, "
                   "official.json), so that a rerun with the same settings reuses it: the two "
                   "sides take hours at 1000 images on a CPU")
    args = p.parse_args()
    missing = _official_available()
    if missing:
        sys.exit(f"the official AutoAttack is not installed ({missing}); accepted: "
                 "pip install -e \".[crosscheck]\"")
    from aalp_tf.data.readers import read_mnist
    from aalp_tf.evaluation.loading import load_logits

    budget = QUICK if args.quick else STANDARD
    if args.epsilon is None:  # --quick's model is weak: at 0.3 APGD-CE alone breaks every image
        args.epsilon = 0.05 if args.quick else 0.3
    with tempfile.TemporaryDirectory() as scratch:
        if args.quick:
            path, x, y = _quick_model(scratch)
        else:
            if not args.model:
                sys.exit("--model is required (a SavedModel folder), except with --quick")
            path, splits = args.model, read_mnist(args.source_dir)
            x = (splits.x_test[:args.examples] / 255.0).astype(np.float32)
            y = splits.y_test[:args.examples]
        logits_fn, shape = load_logits(str(path))
        harness.header(f"AutoAttack agreement: {len(y)} images, {args.norm} epsilon "
                       f"{args.epsilon}, budgets {budget}")
        fns = our_attacks(logits_fn, shape, epsilon=args.epsilon, norm=args.norm,
                          seed=args.seed, **budget)
        key = dict(model=str(args.model), examples=len(y), epsilon=args.epsilon,
                   norm=args.norm, seed=args.seed, budget=budget, quick=args.quick)
        ours, our_seconds = reuse(args.work_dir, "ours", key, lambda: run_ours(
            logits_fn, x, y, fns, batch=args.batch_size, epsilon=args.epsilon, norm=args.norm))
        official, official_after, official_seconds = reuse(
            args.work_dir, "official", key, lambda: run_official(
                logits_fn, x, y, shape=shape, epsilon=args.epsilon, norm=args.norm,
                seed=args.seed, batch=args.batch_size, budget=budget))
        correct = ours["clean"]
        costs = pass_costs(logits_fn, x[correct][:args.batch_size], y[correct][:args.batch_size])
        floor = floor_seconds(costs, ours, budget, int(logits_fn(x[:1]).shape[-1]))
        record = report(ours, our_seconds, official, official_after, official_seconds, floor)
        record["pass_cpu_seconds_per_image"] = costs
    record.update(model=str(args.model), norm=args.norm, epsilon=args.epsilon, budget=budget,
                  command=harness.command(), machine=harness.machine())
    if args.output:
        write_atomically(args.output, json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
