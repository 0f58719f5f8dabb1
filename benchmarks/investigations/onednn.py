"""Question 4b: TensorFlow's oneDNN kernels (TF_ENABLE_ONEDNN_OPTS) on and off.

    python -m benchmarks.investigations.onednn            # LeNet and ResNet32 passes, PGD-40, train steps
    python -m benchmarks.investigations.onednn --quick    # width-4 LeNet, k = 3 (< 1 min)

TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, when it is imported, and on x86 CPUs without
AVX-512 VNNI/BF16/AMX (this AMD EPYC among them) leaves oneDNN off; its own kernels outside
oneDNN are built for SSE only. `import aalp_tf` turns it on unless the variable is already set
(aalp_tf/__init__.py). The two settings therefore need two processes: this script starts one
worker per setting, each builds and warms up the same graphs, and the parent then times them in
rounds, each round running every graph once in each worker (the workers' order alternating), so
the ratio on / off of a round compares two calls made back to back. Nothing else runs meanwhile:
a worker waits on its stdin while the other is timed.
"""
import argparse
import json
import os
import subprocess
import sys
import time

from benchmarks import harness

SETTINGS = ("0", "1")  # TF_ENABLE_ONEDNN_OPTS of the two workers


def graphs(quick: bool):
    """name -> zero-argument callable, for the worker. Train steps run as `train` runs them
    (deterministic ops on)."""
    from aalp_tf import attacks
    from aalp_tf.experiment import training
    training.seed_everything(0, deterministic=True)
    out = {}
    archs = [("lenet", 4, 3)] if quick else [("lenet", 0, 0), ("resnet32", 0, 0)]
    for arch, width, steps in archs:
        model, spec = harness.build(harness.run_config(arch, "aalp", width=width, steps=steps))
        natural, _ = harness.build(harness.run_config(arch, "natural", width=width))
        cfg = model.attack_config
        grad = harness.input_gradient_function(model)
        logits_fn = model.inference_logits  # one object: attacks.pgd keeps one trace
        for batch in ((16, 128) if arch == "lenet" else (128,)):
            x, y = harness.random_batch(spec.image_shape, batch, seed=batch)
            out[f"{arch} input gradient, batch {batch}"] = (
                lambda g=grad, a=x, b=y: g(a, b))
            out[f"{arch} PGD-{cfg.steps}, batch {batch}"] = (
                lambda f=logits_fn, c=cfg, a=x, b=y: attacks.pgd(
                    f, a, b, epsilon=c.epsilon, step_size=c.step_size, steps=c.steps))
        x, y = harness.random_batch(spec.image_shape, 128)
        for name, m in (("natural", natural), (f"aalp (PGD-{cfg.steps})", model)):
            step = harness.train_step_function(m)
            out[f"{arch} {name} train step, batch 128"] = lambda f=step, a=x, b=y: f((a, b))
    return out


def worker(quick: bool):
    """Builds and warms every graph, then times the one named on each stdin line."""
    from tensorflow.python.util import _pywrap_util_port
    fns = graphs(quick)
    for fn in fns.values():
        harness.sync(fn())
    print(json.dumps({"names": list(fns), "onednn": _pywrap_util_port.IsMklEnabled()}),
          flush=True)
    for line in sys.stdin:
        start = time.perf_counter()
        harness.sync(fns[line.strip()]())
        print(time.perf_counter() - start, flush=True)


def start_worker(setting: str, quick: bool):
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=setting, TF_CPP_MIN_LOG_LEVEL="3")
    argv = [sys.executable, "-m", __spec__.name, "--worker"] + (["--quick"] if quick else [])
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=None, text=True, bufsize=1)
    return proc, json.loads(reply(proc, setting))


def reply(proc, setting: str) -> str:
    line = proc.stdout.readline()
    if not line:  # its traceback is on our stderr
        sys.exit(f"the worker with TF_ENABLE_ONEDNN_OPTS={setting} died (status {proc.wait()})")
    return line


def time_in(proc, setting: str, name: str) -> float:
    proc.stdin.write(name + "\n")
    proc.stdin.flush()
    return float(reply(proc, setting))


def main():
    p = harness.parser(__doc__.splitlines()[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.quick)
    repeats = args.repeats or (3 if args.quick else 5)
    harness.header("oneDNN on and off (TF_ENABLE_ONEDNN_OPTS, one worker process each)")
    workers = {s: start_worker(s, args.quick) for s in SETTINGS}
    for s, (_, ready) in workers.items():
        print(f"TF_ENABLE_ONEDNN_OPTS={s}: oneDNN enabled as TF reports it: {ready['onednn']}")
    print()
    names = workers[SETTINGS[0]][1]["names"]
    times = {(n, s): [] for n in names for s in SETTINGS}
    for r in range(repeats):
        for name in names:
            for s in (SETTINGS if r % 2 == 0 else SETTINGS[::-1]):
                times[(name, s)].append(time_in(workers[s][0], s, name))
    for proc, _ in workers.values():
        proc.stdin.close()
        proc.wait()
    rows = []
    for name in names:
        off, on = times[(name, "0")], times[(name, "1")]
        ratios = [b / a for a, b in zip(off, on)]
        rows.append([name, f"{1e3 * harness.median(off):.1f}", f"{1e3 * harness.median(on):.1f}",
                     f"**{harness.median(ratios):.2f}**", harness.spread(ratios)])
    harness.table(["graph", "ms, oneDNN off", "ms, oneDNN on", "on / off", "per-round range"],
                  rows)


if __name__ == "__main__":
    main()
