"""Question 3, a finding: which MaxPoolGrad kernel a PGD loop runs under oneDNN, per process.

    python -m benchmarks.investigations.maxpoolgrad_rewrite                  # 8 processes
    python -m benchmarks.investigations.maxpoolgrad_rewrite --processes 3    # fewer
    python -m benchmarks.investigations.maxpoolgrad_rewrite --quick          # 1 process

oneDNN's graph pass gives MaxPoolGrad its fast kernel (_MklNativeMaxPoolGrad) only when it has
already rewritten the matching MaxPool; inside a while loop's body (a cycle once lowered) the
order it visits the nodes in is not fixed. Each fresh process here builds a width-4 LeNet
(it has two MaxPools), runs PGD-3 once in two forms and reads from the TF profiler which
MaxPoolGrad kernel ran:
  inlined          the input gradient written into the loop body (attacks.pgd until this finding)
  attacks.pgd      the loop body calls attacks.loop_input_gradient, a function of its own
"""
import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile

from benchmarks import harness

EPSILON, STEP, STEPS = 0.3, 0.01, 3


def kernels_in_one_process():
    import tensorflow as tf
    from aalp_tf import attacks
    model, spec = harness.build(harness.run_config("lenet", "madry", width=4))
    x, y = harness.random_batch(spec.image_shape, 16)
    logits_fn = model.inference_logits

    @tf.function
    def inlined(x, y):
        objective = attacks.cross_entropy_objective(y)
        x_adv = x
        for _ in tf.range(STEPS):
            grad, _ = attacks.input_gradient(logits_fn, x_adv, objective)
            x_adv = attacks.project(x_adv + STEP * tf.sign(grad), x, epsilon=EPSILON)
        return x_adv

    forms = {"inlined": lambda: inlined(x, y),
             "attacks.pgd": lambda: attacks.pgd(logits_fn, x, y, epsilon=EPSILON,
                                                step_size=STEP, steps=STEPS)}
    found = {}
    for name, fn in forms.items():
        harness.sync(fn())
        _, events = harness.profiled(fn, tempfile.mkdtemp(prefix="aalp_rewrite_"))
        types = {op_type for op_type, _, _ in harness.kernel_events(events)}
        found[name] = sorted(t for t in types if "MaxPoolGrad" in t)
    return found


def main():
    p = harness.parser(__doc__.splitlines()[0])
    p.add_argument("--processes", type=int, default=0, help="fresh processes (default 8; "
                   "--quick: 1)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(kernels_in_one_process()))
        return
    args.processes = args.processes or (1 if args.quick else 8)
    harness.header("MaxPoolGrad kernel of a PGD loop under oneDNN, one row per fresh process")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    counts = collections.Counter()
    rows = []
    for i in range(args.processes):
        out = subprocess.run([sys.executable, "-m", __spec__.name, "--child"], env=env,
                             capture_output=True, text=True, check=True)
        found = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append([i + 1] + [", ".join(found[form]) for form in ("inlined", "attacks.pgd")])
        for form, types in found.items():
            counts[(form, types == ["_MklNativeMaxPoolGrad"])] += 1
    harness.table(["process", "inlined", "attacks.pgd"], rows)
    for form in ("inlined", "attacks.pgd"):
        print(f"{form}: oneDNN's MaxPoolGrad alone in {counts[(form, True)]} of "
              f"{args.processes} processes")


if __name__ == "__main__":
    main()
