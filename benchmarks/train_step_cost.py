"""Question 1: the train-step cost of every method against its physical floor, at batch 128.

    python -m benchmarks.train_step_cost            # the paper's shapes (minutes)
    python -m benchmarks.train_step_cost --quick    # tiny widths and steps (< 1 min)

Each method's step is `AdversarialModel.train_step` traced as Keras traces it, on a model from
`trainer.build_model`. Its floor, built from the same architecture with the least TF code per
part (each a tf.function):
  k x (one input-gradient pass, model in inference mode)          the adversary
  + one training-mode forward + backward + Adam apply over the branches the method trains on
  + (TRADES) one clean inference forward, the KL target of its adversary.
Ratio = step / floor, the median of per-round ratios (harness.py). Goal: <= 1.15.
The adversary's part is timed as GRAD_CALLS back-to-back input-gradient calls scaled to k (one
call times k multiplies that call's noise by k). `[input gradient]` in the parts table is per call.
"""
from benchmarks import harness  # first: it imports aalp_tf before TensorFlow starts (oneDNN)

import tensorflow as tf

from aalp_tf.experiment import training
from aalp_tf.methods import METHODS

GOAL = 1.15
GRAD_CALLS = 10  # input-gradient calls per round, at most k


def update_function(model, branches: int):
    """One training-mode forward + backward + apply over `branches` batches (distinct inputs,
    so that no graph optimisation can merge the branches)."""

    @tf.function
    def update(xs, y):
        with tf.GradientTape() as tape:
            loss = 0.0
            for x in xs[:branches]:
                logits = model(x, training=True)
                loss += tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                    labels=y, logits=logits))
        grads = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply(grads, model.trainable_variables)
        return loss

    return update


def measure(arch: str, *, width: int, steps: int, batch: int, repeats: int, methods):
    """Times every method's step and the floor's parts side by side; returns table rows."""
    variants, models = {}, {}
    for name in methods:
        model, spec = harness.build(harness.run_config(arch, name, width=width, steps=steps,
                                                       batch=batch))
        models[name] = model
    x, y = harness.random_batch(spec.image_shape, batch, seed=0)
    x2, _ = harness.random_batch(spec.image_shape, batch, seed=1)
    k = next(iter(models.values())).attack_config.steps
    steps_fns = {}
    for name, model in models.items():
        steps_fns[name] = harness.train_step_function(model)
        variants[name] = (lambda f: lambda: f((x, y)))(steps_fns[name])
    base = models[methods[0]]  # every method's model has this architecture (build_model)
    grad = harness.input_gradient_function(base)
    calls = max(1, min(k, GRAD_CALLS))

    def grads():
        for _ in range(calls):
            out = grad(x, y)
        return out

    upd1, upd2 = update_function(base, 1), update_function(base, 2)
    infer = tf.function(lambda images: base(images, training=False))
    variants.update({"[input gradient]": grads, "[update 1]": lambda: upd1((x, x2), y),
                     "[update 2]": lambda: upd2((x, x2), y), "[inference]": lambda: infer(x)})
    times = harness.interleaved(variants, repeats=repeats)
    for name, fn in steps_fns.items():
        assert fn.experimental_get_tracing_count() == 1, f"{name} retraced"

    def floor(name, r):
        method = METHODS.get(name)
        adv = k if "adv" in method.branches else 0
        extra = times["[inference]"][r] if method.adversary == "kl" else 0.0
        update = times[f"[update {len(method.branches)}]"][r]
        return adv / calls * times["[input gradient]"][r] + update + extra

    rows = []
    for name in methods:
        method = METHODS.get(name)
        ratios = [times[name][r] / floor(name, r) for r in range(repeats)]
        ratio = harness.median(ratios)
        floor_ms = 1e3 * harness.median([floor(name, r) for r in range(repeats)])
        rows.append([arch, name, k if "adv" in method.branches else 0, len(method.branches),
                     f"{1e3 * harness.median(times[name]):.1f}", f"{floor_ms:.1f}",
                     f"**{ratio:.3f}**", harness.spread(ratios),
                     "yes" if ratio <= GOAL else "NO"])
    parts = {p: 1e3 * harness.median(times[p]) for p in variants if p.startswith("[")}
    parts["[input gradient]"] /= calls
    return rows, parts


def main():
    p = harness.parser(__doc__.splitlines()[0])
    p.add_argument("--models", default="lenet,resnet32", help="comma-separated: lenet,resnet32")
    args = p.parse_args()
    # As a default training run does (--deterministic): the same kernels as `train`.
    training.seed_everything(0, deterministic=True)
    archs = ["lenet"] if args.quick else args.models.split(",")
    # quick: LeNet at width 4, PGD-3, batch 32 (the code paths, not the numbers)
    width, steps, batch = (4, 3, 32) if args.quick else (0, 0, 128)
    repeats = args.repeats or (3 if args.quick else 7)
    harness.header("Train-step cost against the floor")
    rows, parts_rows = [], []
    for arch in archs:
        arch_rows, parts = measure(arch, width=width, steps=steps, batch=batch, repeats=repeats,
                                   methods=METHODS.names())
        rows += arch_rows
        parts_rows.append([arch, batch] + [f"{parts[p]:.1f}" for p in sorted(parts)])
    harness.table(["model", "method", "k", "branches", "step ms", "floor ms",
                   f"step / floor (goal <= {GOAL})", "per-round range", "goal met"], rows)
    harness.table(["model", "batch"] + [f"{p} ms" for p in sorted(parts)], parts_rows)


if __name__ == "__main__":
    main()
