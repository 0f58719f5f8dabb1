"""Running the cells of a study: the one training path, then the one evaluation path.

A cell trains with `experiment.training.train` on the config `train` would build from the same
flags (with the cell's method, seed and folders), then evaluates its SavedModel with
`evaluation.robustness.evaluate`, as the `evaluate` command does, once per number of test
images the attacks use. Every step resumes: `train` continues its run folder after the last
completed epoch (and does not export twice), an evaluation record already written for this
export with these settings is reused, and a cell whose record exists is never run again.
"""
import dataclasses
import json
import pathlib
import subprocess
import time
from importlib import metadata
from typing import Dict, List, Optional, Tuple

import keras

from aalp_tf.comparison import cells as cell_files
from aalp_tf.comparison import config as comparison_config
from aalp_tf.comparison.cells import Cell
from aalp_tf.comparison.config import CompareConfig
from aalp_tf.config import check
from aalp_tf.data.datasets import DATASETS, evaluation_batches, load_arrays, make_data
from aalp_tf.errors import UsageError
from aalp_tf.evaluation import loading, robustness, suite
from aalp_tf.experiment import training
from aalp_tf.files import full_disk_refused, write_atomically

RERUN = "run the same command again to resume"  # what a full disk leaves: every file whole


@dataclasses.dataclass(frozen=True)
class Study:
    """What `prepare` established before any work.

    Attributes:
      examples: {attack: the number of test images it is evaluated on}.
      groups: [(N, attacks on the first N images)], the largest N first.
      settings: what every cell shares (settings.json).
    """

    examples: Dict[str, int]
    groups: List[Tuple[int, List[str]]]
    settings: dict


def prepare(cfg: CompareConfig, plan: List[Cell]) -> Study:
    """Checks the attacks, the data and the study folder; writes nothing.

    Raises:
      UsageError: an unknown attack, data that does not fit the sizes asked for, or a study
        folder holding other settings.
    """
    for name in cfg.attacks:
        suite.parse_attack(name)
    data = cfg.run.data
    arrays = load_arrays(data.dataset, source_dir=data.source_dir, data_dir=data.data_dir)
    first = comparison_config.cell_run_config(cfg, plan[0].method, plan[0].seed)
    make_data(first.data, seed=0, epochs=1, arrays=arrays)  # the training split's sizes
    available = len(arrays.x_test)
    check(cfg.test_examples <= available, f"--test_examples={cfg.test_examples} exceeds the "
          f"{available} {data.dataset} test examples")
    test_count = cfg.test_examples or available
    for name, count in cfg.attack_examples:
        check(count <= test_count, f"--attack_examples {name}:{count} exceeds the {test_count} "
              f"test examples; accepted: N in 1..{test_count}")
    examples = comparison_config.examples_per_attack(cfg, test_count)
    settings = comparison_config.study_settings(cfg, examples)
    cell_files.check_settings(cfg, settings)
    return Study(examples=examples, groups=comparison_config.evaluation_groups(examples),
                 settings=settings)


def run_cells(cfg: CompareConfig, study: Study, plan: List[Cell], todo: List[Cell]) -> None:
    """Runs every cell of `todo` that is not finished, in order.

    A cell another process is running is skipped by a plain run and refused for --cell.
    """
    code = code_version()
    for cell in todo:
        record = cell_files.record_path(cfg, cell)
        try:
            if not record.exists():
                with cell_files.locked(cfg, cell):
                    # Looked at again under the lock: another process may have just finished it.
                    if not record.exists():
                        run_cell(cfg, study, cell, plan, code=code)
                        continue
            print(f"{cell.name} already finished ({record}): skipped")
        except cell_files.CellBusy:
            if cfg.cell is not None:
                raise UsageError(f"--cell={cell.index} ({cell.name}) is running in another "
                                 "process; accepted: another cell, or this one when it ends"
                                 ) from None
            print(f"{cell.name} is running in another process: skipped")


def run_cell(cfg: CompareConfig, study: Study, cell: Cell, plan: List[Cell], *,
             code: str) -> dict:
    """Trains (or resumes) and evaluates one cell, writes its record, prints one line."""
    run_cfg = comparison_config.cell_run_config(cfg, cell.method, cell.seed)
    start = time.time()
    print(f"{cell.name}: training in {run_cfg.train.model_dir}", flush=True)
    # A fresh Keras state, as a new `train` process has: layer names and Keras' global seed
    # generator then match a cell run alone with --cell.
    keras.backend.clear_session()
    result = training.train(run_cfg)
    trained = time.time()
    accuracy, examples, failed = evaluate_cell(cfg, study, cell, run_cfg,
                                               pathlib.Path(result.export_path))
    done = time.time()
    run = pathlib.Path(run_cfg.train.model_dir)
    record = {
        "cell": cell.name, "method": cell.method, "seed": cell.seed,
        "config": cell_files.read_json(run / "config.json"),
        "evaluation": {"examples": examples, "epsilon": cfg.run.attack.epsilon,
                       "step_size": cfg.eval_step_size, "restarts": cfg.restarts,
                       "seed": cfg.eval_seed, "checks": cfg.checks,
                       "check_examples": cfg.check_examples},
        "epochs": cell_files.read_json(run / "history.json"),
        "accuracy": accuracy, "checks_failed": failed,
        "seconds": {"train": round(trained - start, 1), "evaluate": round(done - trained, 1),
                    "total": round(done - start, 1)},
        "code": code}
    write_atomically(cell_files.record_path(cfg, cell), json.dumps(record, indent=1) + "\n")
    remaining = len(plan) - len(cell_files.finished(cfg, plan))
    print(progress_line(record, remaining), flush=True)
    return record


def evaluate_cell(cfg: CompareConfig, study: Study, cell: Cell, run_cfg, export: pathlib.Path):
    """Every attack on its test images, reusing evaluation records already written.

    Returns:
      ({attack: accuracy}, {attack: examples}, [names of failed sanity checks]).
    """
    accuracy, examples, failed, logits = {}, {}, [], None
    for index, (count, names) in enumerate(study.groups):
        path = cell_files.evaluation_path(cfg, cell, count)
        with_checks = cfg.checks and index == 0  # once, on the most images
        record = cell_files.read_json(path) if path.exists() else None
        if record is not None and reusable(record, cfg, export, names, count, with_checks):
            print(f"{cell.name}: reusing {path}")
        else:
            if logits is None:
                logits = loading.load_logits(str(export))
            record = evaluate_group(cfg, run_cfg, logits, export, names, count, with_checks)
            with full_disk_refused(cfg.work_dir, flag="--runs_dir", then=RERUN):
                write_atomically(path, json.dumps(record, indent=2) + "\n")
        for name in names:
            accuracy[name] = record["accuracy"][name]
            examples[name] = record["examples"]
        if with_checks:
            failed = record["checks"]["failed"]
    ordered = list(study.examples)  # --attacks order, whatever order the groups ran in
    return ({n: accuracy[n] for n in ordered}, {n: examples[n] for n in ordered}, failed)


def evaluate_group(cfg: CompareConfig, run_cfg, logits, export: pathlib.Path, names, count: int,
                   with_checks: bool) -> dict:
    """What `python -m aalp_tf.evaluate` computes and writes, on the first `count` images."""
    logits_fn, image_shape = logits
    batches, total = evaluation_batches(dataclasses.replace(run_cfg.data, test_examples=count))
    print(f"evaluating {export} on {total} {run_cfg.data.dataset} test images: "
          f"{', '.join(names)}", flush=True)
    result = robustness.evaluate(
        logits_fn, batches, attacks=names, image_shape=image_shape,
        epsilon=cfg.run.attack.epsilon, step_size=cfg.eval_step_size, norm=cfg.run.attack.norm,
        restarts=cfg.restarts,
        seed=cfg.eval_seed, checks=with_checks, check_examples=cfg.check_examples,
        num_batches=-(-total // run_cfg.data.batch_size), verbose=True)
    failed = result.get("checks", {}).get("failed")
    if failed:
        print(f"WARNING: sanity checks failed: {', '.join(failed)}: these numbers may overstate "
              "robustness")
    return {"model": str(export), "dataset": DATASETS.get(run_cfg.data.dataset).name, **result}


def reusable(record: dict, cfg: CompareConfig, export: pathlib.Path, names, count: int,
             with_checks: bool) -> bool:
    """Whether an evaluation record on disk is this export's, with these attacks and settings."""
    same = (pathlib.Path(record.get("model", "")).resolve() == export.resolve()
            and set(record.get("accuracy", {})) == set(names)
            and record.get("examples") == count
            and record.get("epsilon") == cfg.run.attack.epsilon
            and record.get("step_size") == cfg.eval_step_size
            and record.get("restarts") == cfg.restarts and record.get("seed") == cfg.eval_seed)
    if not with_checks:
        return same
    checks = record.get("checks") or {}
    return same and checks.get("examples") == min(cfg.check_examples, count)


def progress_line(record: dict, remaining: int) -> str:
    """`alp-seed0 finished in 18.2 min (train 9.4, evaluate 8.8): clean 95.20%, ...; 17 cells
    remain`."""
    seconds = record["seconds"]
    shown = ", ".join(f"{name} {100 * value:.2f}%" for name, value in record["accuracy"].items())
    return (f"{record['cell']} finished in {seconds['total'] / 60:.1f} min (train "
            f"{seconds['train'] / 60:.1f}, evaluate {seconds['evaluate'] / 60:.1f}): {shown}; "
            f"{remaining} {'cell remains' if remaining == 1 else 'cells remain'}")


def code_version() -> str:
    """Which code made a record: the package version and, in a git checkout, its commit."""
    root = pathlib.Path(__file__).resolve().parents[2]  # the repository, in a checkout
    commit = _git(root, "rev-parse", "--short", "HEAD")
    if commit is None:
        where = "not a git checkout"
    else:
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
        where = f"git {commit}{' with local changes' if dirty else ''}"
    return (f"aalp_tf {metadata.version('aalp_tf')} ({where}), python -m aalp_tf.compare: "
            "experiment.training.train, evaluation.robustness.evaluate")


def _git(root: pathlib.Path, *args) -> Optional[str]:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None
