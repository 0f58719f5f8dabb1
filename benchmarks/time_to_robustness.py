"""Issue 23: CPU-minutes to a robust MNIST model, per method × training adversary × AWP.

    python -m benchmarks.time_to_robustness                 # the study's budget, 12 runs
    python -m benchmarks.time_to_robustness --quick         # tiny shapes: checks the script

Each configuration trains in a fresh child process at the MNIST seed study's budget
(flags/mnist_seeds.cfg: LeNet width 16, 20000 images, 8 epochs, batch 50, Adam 1e-3, ε = 0.3
ramped over the first epoch, validation PGD-10 on 1000 held-out images), through
`experiment.training.train`, the path `python -m aalp_tf.train` takes; only the training
adversary (`AttackConfig.adversary`), `TrainConfig.awp_gamma` and `TrainConfig.lr_schedule`
change (and the epochs, for a configuration named NAME-Kep, which `--also` adds to the grid).
The child's CPU time (user + system of the whole process, from its start: imports, data,
tracing, training and the per-epoch validation, as `/usr/bin/time` measured the study's 14.0
CPU-minutes) is read with os.times() at the end of every epoch, after its checkpoint.

Then, not counted, every epoch's checkpoint is evaluated at the paper's ε = 0.3 and PGD step
0.01: clean and PGD-40 on the first 2000 test images. "Minutes to target" is the CPU time at the
end of the first epoch whose PGD-40 accuracy reaches the target (88%). `aa-lite1000` (not
standard AutoAttack: APGD-CE, APGD-T, Square with 1000 queries, no FAB-T, as the study
reports) runs on the first 1000 test images for the last epoch, and for the target epoch too
when that one is within the goal's minutes. The goal (issue 23): PGD-40 ≥ 88% in ≤ 5
CPU-minutes with AutoAttack within 1 point of the same method's PGD-10 model (its last epoch).

Results land in --work_dir/<config>.json as each child finishes; a rerun reuses them (delete
one to redo it). The table goes to stdout and, at the full budget, to --out, keeping the
"## Findings" section written there by hand.
"""
import argparse
import dataclasses
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

from aalp_tf.methods import METHODS
from aalp_tf.rules import ADVERSARIES, LR_SCHEDULES
from benchmarks import harness

REPO = pathlib.Path(__file__).resolve().parents[1]
STUDY_FLAGS = REPO / "flags" / "mnist_seeds.cfg"
# The study's own timing of its ALP run, on the machine of its day (CPU-minutes depend on the
# machine: the table's alp-pgd row is the same run timed on this one).
STUDY_BASELINE = "the study's ALP with PGD-10 reached 89.15% in 14.0 CPU-minutes on its machine"
FULL = {"methods": ("alp", "aalp"), "adversaries": ("pgd", "fgsm_rs", "n_fgsm"),
        "attack": "pgd40", "autoattack": "aa-lite1000", "test": 2000, "autoattack_test": 1000,
        "flags": (), "data": "MNIST"}
QUICK = {"methods": ("alp",), "adversaries": ("n_fgsm",), "attack": "pgd5",
         "autoattack": "apgd-ce5", "test": 64, "autoattack_test": 32,
         "flags": ("--train_examples=256", "--val_examples=64", "--epochs=2", "--width=4",
                   "--batch_size=32", "--attack_steps=2", "--val_attack_steps=2"),
         "data": "synthetic MNIST-shaped"}
FINDINGS = "\n## Findings"  # from here on, the markdown is written by hand
EVAL_EPSILON, EVAL_STEP = 0.3, 0.01  # the paper's, as the study evaluates


def parse_args():
    p = harness.parser(__doc__.split("\n")[0])
    p.add_argument("--source_dir", default=str(REPO.parent / "shared" / "datasets" / "mnist"),
                   help="the MNIST files (--quick trains on synthetic arrays instead)")
    p.add_argument("--work_dir", default="", help="run folders and per-configuration results "
                   "(default: /tmp/time_to_robustness, --quick: a fresh temporary folder)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "time_to_robustness.md"))
    p.add_argument("--awp_gamma", type=float, default=5e-3,
                   help="γ of the AWP-on runs (Wu et al.: 5e-3 for TRADES-AWP, 1e-2 for AT-AWP)")
    p.add_argument("--lr_schedule", default="constant", help="constant (the study's), cyclic, "
                   "piecewise")
    p.add_argument("--target", type=float, default=0.88)
    p.add_argument("--goal_minutes", type=float, default=5.0)
    p.add_argument("--only", default="", help="comma-separated config names, e.g. "
                   "alp-fgsm_rs-awp (default: all)")
    p.add_argument("--also", default="", help="comma-separated configurations measured and "
                   "reported beside the grid, named as the table names them: METHOD-ADVERSARY"
                   "[-awp][-SCHEDULE][-EPOCHSep], e.g. alp-fgsm_rs-cyclic or alp-fgsm_rs-13ep "
                   "(AWP at --awp_gamma; EPOCHS instead of the study's 8)")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    return p.parse_args()


@dataclasses.dataclass(frozen=True)
class Config:
    method: str
    adversary: str
    awp_gamma: float
    lr_schedule: str
    epochs: int = 0  # 0: the study's

    @property
    def name(self) -> str:
        awp = "-awp" if self.awp_gamma else ""
        schedule = "" if self.lr_schedule == "constant" else f"-{self.lr_schedule}"
        epochs = f"-{self.epochs}ep" if self.epochs else ""
        return f"{self.method}-{self.adversary}{awp}{schedule}{epochs}"

    @classmethod
    def named(cls, name: str, awp_gamma: float) -> "Config":
        """The configuration a name of the table stands for; None when it stands for none."""
        parts = name.split("-")
        epochs = int(parts.pop()[:-2]) if re.fullmatch(r"[1-9][0-9]*ep", parts[-1]) else 0
        awp = "awp" in parts[2:3]
        schedule = parts[3 if awp else 2:] or ["constant"]
        if len(parts) < 2 or len(schedule) != 1:
            return None
        config = cls(parts[0], parts[1], awp_gamma if awp else 0.0, schedule[0], epochs)
        return config if config.name == name else None


def configs(args, plan) -> list:
    found = [Config(m, a, g, args.lr_schedule) for m in plan["methods"]
             for a in plan["adversaries"] for g in (0.0, args.awp_gamma)]
    also = [n for n in args.also.split(",") if n]
    extra = [Config.named(n, args.awp_gamma) for n in also]
    bad = [n for n, c in zip(also, extra) if c is None or c.method not in METHODS.names()
           or c.adversary not in ADVERSARIES or c.lr_schedule not in LR_SCHEDULES]
    if bad:
        sys.exit(f"error: --also names {', '.join(bad)}; accepted: METHOD-ADVERSARY[-awp]"
                 f"[-SCHEDULE][-EPOCHSep] with a method of {', '.join(METHODS.names())}, an "
                 f"adversary of {', '.join(ADVERSARIES)} and a schedule of "
                 f"{', '.join(LR_SCHEDULES)}")
    found += [c for c in extra if c not in found]
    wanted = {n for n in args.only.split(",") if n}
    unknown = wanted - {c.name for c in found}
    if unknown:
        sys.exit(f"error: --only names {', '.join(sorted(unknown))}; accepted: "
                 f"{', '.join(c.name for c in found)}")
    return [c for c in found if not wanted or c.name in wanted]


# ---- the child: train, clock every epoch, then evaluate every checkpoint ---------------------

def run_config(config: Config, args, plan):
    """The RunConfig `python -m aalp_tf.train --dataset=mnist --flagfile=flags/mnist_seeds.cfg`
    resolves, with this configuration's adversary, AWP and schedule."""
    from aalp_tf.cli import configs, runner
    folder = pathlib.Path(args.work_dir) / config.name
    source = [] if args.quick else [f"--source_dir={args.source_dir}"]
    runner.parse_flags(["time_to_robustness", "--dataset=mnist", *source,
                     f"--flagfile={STUDY_FLAGS}", f"--method={config.method}",
                     f"--model_dir={folder}", f"--export_dir={folder}_exports",
                     "--keep_checkpoints=0", *plan["flags"],
                     *([f"--epochs={config.epochs}"] if config.epochs else [])], command="train")
    cfg = configs.config_from_flags()
    return cfg.replace(attack=dataclasses.replace(cfg.attack, adversary=config.adversary),
                       train=dataclasses.replace(cfg.train, awp_gamma=config.awp_gamma,
                                                 lr_schedule=config.lr_schedule))


def cpu_clock():
    """A callback recording this process's CPU minutes (user + system) at each epoch's end."""
    import keras

    class CpuClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.minutes = {}

        def on_epoch_end(self, epoch, logs=None):
            times = os.times()
            self.minutes[epoch + 1] = (times.user + times.system) / 60.0

    return CpuClock()


def child(config: Config, args, plan) -> dict:
    cfg = run_config(config, args, plan)
    from aalp_tf import overfitting
    from aalp_tf.data.datasets import load_arrays
    from aalp_tf.evaluation.robustness import evaluate_model
    from aalp_tf.experiment import training
    from aalp_tf.runs import RunFolder
    if args.quick:
        from benchmarks.input_pipeline import synthetic
        arrays = synthetic("lenet", scale=0.01)  # 600 training and 100 test images
    else:
        arrays = load_arrays("mnist", source_dir=args.source_dir)
    clock = cpu_clock()
    result = training.train(cfg, arrays=arrays, callbacks=[clock], export_model=False, verbose=2)
    if len(clock.minutes) != cfg.train.epochs:
        sys.exit(f"error: {result.run_dir} held finished epochs; accepted: an empty --work_dir "
                 "(the clock counts a run from its first epoch)")
    x = arrays.x_test[:plan["test"]].astype("float32") / 255.0
    y = arrays.y_test[:plan["test"]]
    run, model = RunFolder(cfg.train.model_dir), result.model

    def accuracy(epoch, attacks, count):
        run.restore_weights(model, epoch)
        return evaluate_model(model, (x[:count], y[:count]), attacks=attacks,
                              epsilon=EVAL_EPSILON, step_size=EVAL_STEP, checks=False,
                              batch_size=500)["accuracy"]

    epochs = []
    for epoch in range(1, cfg.train.epochs + 1):
        acc = accuracy(epoch, ["clean", plan["attack"]], plan["test"])
        epochs.append({"epoch": epoch, "cpu_minutes": clock.minutes[epoch],
                       "clean": acc["clean"], "robust": acc[plan["attack"]]})
        print(f"{config.name} epoch {epoch}: {clock.minutes[epoch]:.2f} CPU-min, clean "
              f"{acc['clean']:.4f}, {plan['attack']} {acc[plan['attack']]:.4f}", flush=True)
    target = next((e for e in epochs if e["robust"] >= args.target), None)
    autoattack_epochs = {cfg.train.epochs}
    if target and target["cpu_minutes"] <= args.goal_minutes:
        autoattack_epochs.add(target["epoch"])
    autoattack = {str(e): accuracy(e, [plan["autoattack"]], plan["autoattack_test"])[
        plan["autoattack"]] for e in sorted(autoattack_epochs)}
    return {"config": dataclasses.asdict(config), "name": config.name, "epochs": epochs,
            "target_epoch": target["epoch"] if target else None, "autoattack": autoattack,
            "collapsed": overfitting.collapsed_epochs(result.history),
            "history": result.history, "attack": plan["attack"],
            "autoattack_name": plan["autoattack"]}


# ---- the parent: one child per configuration, then the table ---------------------------------

def result_path(args, config: Config) -> pathlib.Path:
    return pathlib.Path(args.work_dir) / f"{config.name}.json"


def measure(config: Config, args, plan) -> dict:
    path = result_path(args, config)
    if path.exists():
        print(f"{config.name}: reusing {path}", flush=True)
        return json.loads(path.read_text())
    argv = [sys.executable, "-m", "benchmarks.time_to_robustness", f"--child={config.name}",
            f"--work_dir={args.work_dir}", f"--source_dir={args.source_dir}",
            f"--awp_gamma={args.awp_gamma}", f"--lr_schedule={args.lr_schedule}",
            f"--target={args.target}", f"--goal_minutes={args.goal_minutes}"]
    argv += ["--quick"] if args.quick else []
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    print(f"{config.name}: training in a child process", flush=True)
    done = subprocess.run(argv, cwd=REPO, env=env)
    if done.returncode != 0 or not path.exists():
        sys.exit(f"error: configuration {config.name} failed (exit {done.returncode})")
    return json.loads(path.read_text())


def pct(value) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"


def table_rows(records, args):
    """Rows of the results table, and the configurations that meet the goal."""
    reference = reference_autoattack(records)
    rows, met = [], []
    for r in records:
        c, last = r["config"], r["epochs"][-1]
        target = next((e for e in r["epochs"] if e["epoch"] == r["target_epoch"]), None)
        at_target = r["autoattack"].get(str(r["target_epoch"])) if target else None
        base = reference.get(c["method"])
        ok = bool(target and target["cpu_minutes"] <= args.goal_minutes and at_target is not
                  None and base is not None and at_target >= base - 0.01)
        if ok:
            met.append(r["name"])
        reached = (f"{target['cpu_minutes']:.1f} (epoch {target['epoch']})" if target
                   else "not reached")
        rows.append([c["method"], c["adversary"], c["awp_gamma"] or "off", c["lr_schedule"],
                     last["epoch"], reached, pct(last["robust"]), pct(last["clean"]),
                     pct(r["autoattack"][str(last["epoch"])]), pct(at_target),
                     f"{last['cpu_minutes']:.1f}",
                     ", ".join(map(str, r["collapsed"])) or "none", "yes" if ok else "no"])
    return rows, met


def conclusion(records, met, args) -> str:
    if met:
        return f"Meets the goal: {', '.join(met)}."
    reached = sorted((r for r in records if r["target_epoch"]),
                     key=lambda r: r["epochs"][r["target_epoch"] - 1]["cpu_minutes"])
    if not reached:
        return f"No configuration reached {100 * args.target:.0f}% under the attack."
    attack, autoattack = records[0]["attack"], records[0]["autoattack_name"]
    reference = reference_autoattack(records)
    said = []
    for r in reached:
        minutes = r["epochs"][r["target_epoch"] - 1]["cpu_minutes"]
        if minutes > args.goal_minutes:
            said.append(f"The fastest to the target otherwise is {r['name']}, in {minutes:.1f} "
                        f"CPU-minutes ({minutes - args.goal_minutes:+.1f} against the goal's "
                        f"{args.goal_minutes:g}).")
            break
        at, base = r["autoattack"][str(r["target_epoch"])], reference.get(r["config"]["method"])
        said.append(f"{r['name']} reaches {attack} ≥ {100 * args.target:.0f}% in {minutes:.1f} "
                    f"CPU-minutes, within the goal's {args.goal_minutes:g}, but not under "
                    f"AutoAttack's attacks: {autoattack} {pct(at)} there, "
                    + (f"{100 * (base - at):.1f} points under its method's PGD-10 model "
                       f"({pct(base)}; the goal allows 1)." if base is not None else
                       "with no PGD-10 model of its method to compare."))
    return "No configuration meets the goal. " + " ".join(said)


def reference_autoattack(records) -> dict:
    """Method -> AutoAttack accuracy of its PGD-10 run at the study's settings (last epoch)."""
    return {r["config"]["method"]: r["autoattack"][str(r["epochs"][-1]["epoch"])]
            for r in records if r["name"] == f"{r['config']['method']}-pgd"}


def main():
    args = parse_args()
    plan = QUICK if args.quick else FULL
    if args.child:
        config = Config.named(args.child, args.awp_gamma)
        record = child(config, args, plan)
        result_path(args, config).write_text(json.dumps(record, indent=1))  # the run is done
        return
    if args.quick and not args.work_dir:
        with tempfile.TemporaryDirectory(prefix="time_to_robustness_") as folder:
            args.work_dir = folder
            return report(args, plan)
    args.work_dir = args.work_dir or "/tmp/time_to_robustness"
    report(args, plan)


def report(args, plan) -> None:
    if not args.quick and not pathlib.Path(args.source_dir).is_dir():
        sys.exit(f"error: --source_dir {args.source_dir} is not a folder; accepted: the folder "
                 "of the MNIST files (e.g. ../shared/datasets/mnist)")
    pathlib.Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    records = [measure(c, args, plan) for c in configs(args, plan)]
    rows, met = table_rows(records, args)
    attack, autoattack = records[0]["attack"], records[0]["autoattack_name"]
    harness.header(f"CPU-minutes to {attack} ≥ {100 * args.target:.0f}% on "
                   f"{plan['test']} {plan['data']} test images")
    columns = ["method", "adversary", "AWP γ", "lr schedule", "epochs",
               f"CPU-min to {attack} ≥ {100 * args.target:.0f}%", f"final {attack}", "final clean",
               f"final {autoattack} ({plan['autoattack_test']})", f"{autoattack} at target",
               "CPU-min, all epochs", "collapsed epochs", "goal"]
    harness.table(columns, rows)
    print(conclusion(records, met, args))
    if not args.quick and not args.only:
        write_markdown(args, columns, rows, conclusion(records, met, args),
                       baseline(records, args, attack))


def baseline(records, args, attack) -> str:
    """The baseline to beat, as this machine measured it (the alp-pgd row), and the study's."""
    alp = next((r for r in records if r["name"] == "alp-pgd"), None)
    target = alp and next((e for e in alp["epochs"] if e["epoch"] == alp["target_epoch"]), None)
    if not target:
        return f"Baseline to beat: {STUDY_BASELINE}."
    return (f"Baseline to beat: ALP with PGD-10 (the alp-pgd row) reached {attack} ≥ "
            f"{100 * args.target:.0f}% in {target['cpu_minutes']:.1f} CPU-minutes here "
            f"(epoch {target['epoch']}); {STUDY_BASELINE}.")


def write_markdown(args, columns, rows, verdict, baseline_text) -> None:
    lines = ["# Time to a robust MNIST model (issue 23)", "", __doc__.split("\n\n", 2)[2], "",
             f"`{harness.command()}`", "", harness.machine(), "",
             f"{baseline_text} AWP on: γ = {args.awp_gamma:g}.", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    lines += ["", f"**Conclusion.** {verdict}", ""]
    out = pathlib.Path(args.out)
    kept = out.read_text().partition(FINDINGS)[1:] if out.exists() else ()
    out.write_text("\n".join(lines) + "".join(kept))  # the written findings survive a rerun
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
