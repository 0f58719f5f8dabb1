"""Why a PGD goal is missed: where the time of one attack goes, from the TF profiler's trace.

    python -m benchmarks.investigations.profile_attack                # LeNet, batch 16, k = 40
    python -m benchmarks.investigations.profile_attack --batch 128
    python -m benchmarks.investigations.profile_attack --quick        # width-4 LeNet, k = 5 (< 1 min)

Profiles one warmed-up call each of our PGD-k (attacks.pgd, one graph) and CleverHans v4's TF2
projected_gradient_descent (a Python loop around a tf.function gradient) on the same model and
batch, and reads the profiler's trace (the XSpace TensorBoard's trace viewer shows). Per attack:
wall time, the time covered by TF op kernels (the union of their intervals over all threads), and
the rest (Python, eager dispatch, the executor's scheduling, idle); then the op types that take
the most time. The trace stays in --logdir for the trace viewer (TensorBoard's profile plugin).
"""
import collections
import os
import tempfile

from benchmarks import harness
from aalp_tf import attacks

EPSILON, STEP = 0.3, 0.01


def profile(name, fn, logdir):
    """Wall ms, ms covered by TF ops, and the op time by type, of one warmed-up call of fn."""
    harness.sync(fn())  # warm
    wall, events = harness.profiled(fn, os.path.join(logdir, name))
    ops = harness.kernel_events(events)
    by_type = collections.Counter()
    for op_type, _, d in ops:
        by_type[op_type] += d
    covered = harness.union_ns([(s, s + d) for _, s, d in ops])
    return 1e3 * wall, covered / 1e6, by_type


def main():
    p = harness.parser(__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--logdir", default="")
    args = p.parse_args()
    width, steps = (4, 5) if args.quick else (0, 40)
    model, spec = harness.build(harness.run_config("lenet", "madry", width=width))
    logits_fn = model.inference_logits
    x, y = harness.random_batch(spec.image_shape, args.batch)
    fns = {"ours": lambda: attacks.pgd(logits_fn, x, y, epsilon=EPSILON, step_size=STEP,
                                       steps=steps)}
    try:  # the peer is not a dependency of the package (README, Benchmarks)
        from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent
        fns["CleverHans"] = lambda: projected_gradient_descent(
            logits_fn, x, EPSILON, STEP, steps, float("inf"), clip_min=0.0, clip_max=1.0, y=y,
            rand_init=True, sanity_checks=False)
    except ImportError:
        print("CleverHans is not installed (pip install --no-deps cleverhans==4.0.0 easydict): "
              "profiling ours alone")
    logdir = args.logdir or tempfile.mkdtemp(prefix="aalp_profile_")
    harness.header(f"Profile of one PGD-{steps}, LeNet (width {width or 32}), batch {args.batch}")
    rows, types = [], {}
    for name, fn in fns.items():
        wall, covered, by_type = profile(name, fn, logdir)
        types[name] = by_type
        rows.append([name, f"{wall:.1f}", f"{covered:.1f}", f"{wall - covered:.1f}",
                     f"{(wall - covered) / steps:.2f}"])
    harness.table(["attack", "wall ms (profiled)", "ms inside TF op kernels", "ms outside them",
                   "outside ms per step"], rows)
    top = [t for t, _ in sum(types.values(), collections.Counter()).most_common(8)]
    harness.table(["op type"] + [f"{n} ms (summed over threads)" for n in fns],
                  [[t] + [f"{types[n][t] / 1e6:.1f}" for n in fns] for t in top])
    print(f"trace: {logdir} (tensorboard --logdir {logdir}, Profile tab)")


if __name__ == "__main__":
    main()
