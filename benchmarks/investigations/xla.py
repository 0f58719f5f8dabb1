"""Question 4: XLA (jit_compile) on and off, for the attack graphs and the train step.

    python -m benchmarks.investigations.xla            # LeNet PGD-10/CW-10 at batch 16 and 128; train steps
    python -m benchmarks.investigations.xla --quick    # width-4 LeNet, k = 3 (< 1 min)

`--steps` (default 10) is k of the attacks and of the LeNet train steps' adversary (ResNet32
keeps the paper's PGD-7): XLA's ratio is per gradient pass, so a smaller k than the paper's 40
changes it little and saves most of the time.

Attacks are wrapped in tf.function(jit_compile=on/off) here; the train step is built with
`TrainConfig.jit_compile` (what `--jit_compile` sets), which `trainer.build_model` passes to
`model.compile`, and traced as Keras traces it. Keras turns jit_compile off, with a warning, when
op determinism is on (`--deterministic`, the default), so this script leaves determinism off:
`--jit_compile` takes effect only with `--nodeterministic`.
Reported: time with XLA / time without (median of per-round ratios) and the first call (trace
and compile) of each.
"""
import time

from benchmarks import harness  # first: it imports aalp_tf before TensorFlow starts (oneDNN)

import tensorflow as tf

from aalp_tf import attacks

EPSILON, STEP = 0.3, 0.01


def attack_variants(model, shape, *, steps, batch):
    x, y = harness.random_batch(shape, batch)
    logits_fn = model.inference_logits
    signature = [tf.TensorSpec([None, *shape], tf.float32), tf.TensorSpec([None], tf.int64)]
    out = {}
    for jit in (False, True):
        tag = "XLA" if jit else "graph"
        pgd = tf.function(lambda a, b: attacks.pgd(logits_fn, a, b, epsilon=EPSILON,
                                                   step_size=STEP, steps=steps),
                          input_signature=signature, jit_compile=jit)
        cw = tf.function(lambda a, b: attacks.cw(logits_fn, a, b, epsilon=EPSILON,
                                                 step_size=STEP, steps=steps),
                         input_signature=signature, jit_compile=jit)
        grad = harness.input_gradient_function(model, jit_compile=jit)
        out[(f"batch {batch}: pgd{steps}", tag)] = (lambda f: lambda: f(x, y))(pgd)
        out[(f"batch {batch}: cw{steps}", tag)] = (lambda f: lambda: f(x, y))(cw)
        out[(f"batch {batch}: input gradient", tag)] = (lambda f: lambda: f(x, y))(grad)
    return out


def step_variants(arch, method, *, width, steps, batch):
    out = {}
    for jit in (False, True):
        model, spec = harness.build(harness.run_config(arch, method, width=width, steps=steps,
                                                       batch=batch, jit_compile=jit))
        assert model.jit_compile == jit, "Keras turned jit_compile off"
        x, y = harness.random_batch(spec.image_shape, batch)
        step = harness.train_step_function(model)
        out[(f"{arch} {method} train step", "XLA" if jit else "graph")] = (
            lambda f: lambda: f((x, y)))(step)
    return out


def compare(variants, repeats):
    """Rows: (what, first call without/with XLA, median ms without/with, ratio)."""
    first = {}
    for key, fn in variants.items():
        start = time.perf_counter()
        harness.sync(fn())
        first[key] = time.perf_counter() - start
    times = harness.interleaved(variants, repeats=repeats, warmup=0)
    rows = []
    for what in dict.fromkeys(k[0] for k in variants):
        off, on = times[(what, "graph")], times[(what, "XLA")]
        ratio = harness.median([b / a for a, b in zip(off, on)])
        rows.append([what, f"{first[(what, 'graph')]:.1f}", f"{first[(what, 'XLA')]:.1f}",
                     f"{1e3 * harness.median(off):.1f}", f"{1e3 * harness.median(on):.1f}",
                     f"**{ratio:.2f}**"])
    return rows


def main():
    p = harness.parser(__doc__.splitlines()[0])
    p.add_argument("--models", default="lenet,resnet32", help="train steps of these models")
    p.add_argument("--methods", default="natural,madry,aalp", help="train steps of these methods")
    p.add_argument("--steps", type=int, default=10, help="PGD/CW k (LeNet; ResNet32 keeps 7)")
    args = p.parse_args()
    width = 4 if args.quick else 0
    repeats = args.repeats or (3 if args.quick else 5)
    harness.header("XLA on and off")
    model, spec = harness.build(harness.run_config("lenet", "madry", width=width))
    variants = {}
    for batch in ([16] if args.quick else [16, 128]):
        variants.update(attack_variants(model, spec.image_shape, steps=3 if args.quick else
                                        args.steps, batch=batch))
    rows = compare(variants, repeats)
    archs = ["lenet"] if args.quick else args.models.split(",")
    for arch in archs:
        for method in (["madry"] if args.quick else args.methods.split(",")):
            paper = arch != "lenet"
            rows += compare(step_variants(arch, method, width=width,
                                          steps=3 if args.quick else 0 if paper else args.steps,
                                          batch=32 if args.quick else 128), repeats)
    harness.table(["graph", "first call s (no XLA)", "first call s (XLA)", "ms (no XLA)",
                   "ms (XLA)", "XLA / no XLA"], rows)


if __name__ == "__main__":
    main()
