"""Question 3: attack throughput of our PGD-k and CW-k against the floor and against peers.

    /work/venv/bin/pip install --no-deps cleverhans==4.0.0 easydict   # the peer, this script only
    python -m benchmarks.attack_throughput            # LeNet/MNIST, k = 40, batch 16, 128, 512
    python -m benchmarks.attack_throughput --quick    # width-4 LeNet, k = 5 (< 1 min)

Variants, all on the same model (trainer.build_model, LeNet at the paper's width or --width),
batch, epsilon 0.3, step 0.01 and k, from a random start:
  ours            attacks.pgd / attacks.cw called directly, one trace reused (checked)
  ours, eval      suite.attack_function("pgd40"/"cw40"): what `evaluate` runs (keep_best)
  floor           k x one input-gradient pass (harness.input_gradient_function)
  CleverHans      cleverhans.tf2 projected_gradient_descent (CW-k: its PGD with the CW loss)
  eager           a plain Python loop of GradientTape steps, no tf.function
Goals: ours <= 1.05 x floor; ours >= 1.5x CleverHans at batch 16, never slower at any batch.
"""
from benchmarks import harness  # first: it imports aalp_tf before TensorFlow starts (oneDNN)

import numpy as np
import tensorflow as tf

from aalp_tf import attacks, losses
from aalp_tf.evaluation import suite

EPSILON, STEP = 0.3, 0.01


def eager_pgd(model, x, y, *, steps):
    """The plainest PGD: an eager loop, one tape per step."""
    x_adv = attacks.project(x + tf.random.uniform(tf.shape(x), -EPSILON, EPSILON), x,
                            epsilon=EPSILON)
    for _ in range(steps):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x_adv)
            loss = tf.reduce_sum(losses.cross_entropy(logits=model(x_adv, training=False),
                                                      labels=y))
        grad = tape.gradient(loss, x_adv)
        x_adv = attacks.project(x_adv + STEP * tf.sign(grad), x, epsilon=EPSILON)
    return x_adv


def cleverhans_variants(logits_fn, x, y, steps):
    try:
        from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent
    except ImportError:
        print("CleverHans is not installed: pip install --no-deps cleverhans==4.0.0 easydict")
        return {}

    def cw_loss(labels, logits):  # one object: CleverHans' compute_gradient traces per loss_fn
        return losses.cw_margin(logits=logits, labels=labels)

    def run(loss_fn=None):
        return projected_gradient_descent(logits_fn, x, EPSILON, STEP, steps, np.inf,
                                          loss_fn=loss_fn, clip_min=0.0, clip_max=1.0, y=y,
                                          rand_init=True, sanity_checks=False)

    return {"pgd CleverHans": run, "cw CleverHans": lambda: run(cw_loss)}


def eval_functions(logits_fn, shape, steps):
    """What `evaluate` runs for pgd<k> and cw<k>: one trace each, for every batch size."""
    return {family: suite.attack_function(suite.parse_attack(f"{family}{steps}"),
                                               logits_fn, image_shape=shape, epsilon=EPSILON,
                                               step_size=STEP) for family in ("pgd", "cw")}


def variants_for(model, logits_fn, evals, x, y, *, steps):
    settings = dict(epsilon=EPSILON, step_size=STEP, steps=steps)
    grad = harness.input_gradient_function(model)
    index = tf.range(tf.shape(y)[0], dtype=tf.int64)  # the examples' positions: their seeds
    variants = {
        "pgd ours": lambda: attacks.pgd(logits_fn, x, y, **settings),
        "cw ours": lambda: attacks.cw(logits_fn, x, y, **settings),
        "pgd ours, eval": lambda: evals["pgd"](x, y, index),
        "cw ours, eval": lambda: evals["cw"](x, y, index),
        "[input gradient]": lambda: grad(x, y),
    }
    variants.update(cleverhans_variants(logits_fn, x, y, steps))
    variants["pgd eager"] = lambda: eager_pgd(model, x, y, steps=steps)
    traced = {"attacks.pgd": attacks.pgd, "attacks.cw": attacks.cw, "eval pgd": evals["pgd"],
              "eval cw": evals["cw"]}
    return variants, traced


def rows_for(batch, times, steps):
    med = {name: harness.median(t) for name, t in times.items()}
    floor = steps * med["[input gradient]"]
    rounds = range(len(times["pgd ours"]))
    rows = []
    for family in ("pgd", "cw"):
        for name in (f"{family} ours", f"{family} ours, eval", f"{family} CleverHans",
                     f"{family} eager"):
            if name not in times:
                continue
            vs_floor = harness.median([times[name][r] / (steps * times["[input gradient]"][r])
                                       for r in rounds])
            ours = times[f"{family} ours"]
            per_round = [times[name][r] / ours[r] for r in rounds]
            rows.append([batch, name, f"{batch / med[name]:.0f}", f"{1e3 * med[name]:.1f}",
                         f"**{vs_floor:.3f}**", f"{harness.median(per_round):.2f}",
                         "" if name == f"{family} ours" else harness.spread(per_round)])
    rows.append([batch, f"floor: {steps} x input gradient", f"{batch / floor:.0f}",
                 f"{1e3 * floor:.1f}", "1", "", ""])
    return rows


def main():
    p = harness.parser(__doc__.splitlines()[0])
    p.add_argument("--batches", default="16,128,512")
    p.add_argument("--steps", type=int, default=40, help="k of every attack")
    p.add_argument("--width", type=int, default=0, help="LeNet width (0: the paper's 32); a "
                   "narrower net has cheaper gradient passes, so the loop's own cost shows more")
    p.add_argument("--skip", default="", help="';'-separated variants not to run, e.g. "
                   "'pgd ours, eval;cw ours, eval;pgd eager' (to save time at batch 512)")
    args = p.parse_args()
    skip = {name for name in args.skip.split(";") if name}
    width, steps = (4, 5) if args.quick else (args.width, args.steps)
    batches = [16, 64] if args.quick else [int(b) for b in args.batches.split(",")]
    repeats = args.repeats or (3 if args.quick else 7)
    model, spec = harness.build(harness.run_config("lenet", "madry", width=width))
    harness.header(f"Attack throughput, LeNet (width {width or 32}), k = {steps}")
    logits_fn = model.inference_logits  # one object, so attacks.pgd keeps one trace
    evals = eval_functions(logits_fn, spec.image_shape, steps)
    rows = []
    for batch in batches:
        x, y = harness.random_batch(spec.image_shape, batch, seed=batch)
        variants, traced = variants_for(model, logits_fn, evals, x, y, steps=steps)
        variants = {name: fn for name, fn in variants.items() if name not in skip}
        before = {name: f.experimental_get_tracing_count() for name, f in traced.items()}
        times = harness.interleaved(variants, repeats=repeats)
        rows += rows_for(batch, times, steps)
        traces = {name: f.experimental_get_tracing_count() - before[name]
                  for name, f in traced.items()}
        print(f"batch {batch}: traces during warm-up and {repeats} rounds: {traces}")
    print()
    harness.table(["batch", "variant", "images/s", "ms per batch", "time / floor (ours: goal "
                   "<= 1.05)", "time / ours (CleverHans: goal >= 1.5 at 16, >= 1 at all)",
                   "per-round range"], rows)


if __name__ == "__main__":
    main()
