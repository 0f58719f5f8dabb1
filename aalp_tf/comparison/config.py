"""The comparison's frozen config, its checks, and the settings a study must keep across reruns.

No TensorFlow and no absl here: `cli.compare_config_from_flags` builds a CompareConfig once and
everything below reads it. A study is a grid of cells, one per (method, seed); every cell trains
the same base run (the `train` command's config) with its own method and seed, and is evaluated
with the same attacks on the same test images.
"""
import dataclasses
import os
import pathlib
from typing import Dict, List, Optional, Sequence, Tuple

from aalp_tf import config as cfglib
from aalp_tf.config import RunConfig, check

# Fields of a cell's RunConfig that do not belong to the study's settings: the cell's own
# identity (method, seed), where its files live, and what does not change the trained model.
# data.test_examples is the evaluation's business: training never reads the test split, and
# each cell trains with 0 there, as `train` does without --test_examples.
CELL_FIELDS = {("method", "name"), ("train", "seed"), ("train", "model_dir"),
               ("train", "export_dir"), ("train", "export_name"), ("data", "source_dir"),
               ("data", "data_dir"), ("data", "test_examples"), ("train", "keep_checkpoints"),
               ("train", "analysis_probe"), ("train", "strategy")}
EXPORT_NAME = "model"
# A cell record is the study's result, kept in the repository, not a run folder to resume: one
# written before a field existed is adopted with the value the code of its day ran with, the
# field's default except where that code did otherwise (every run exported its last epoch
# before --export_epoch). Evaluation settings a cell written before they were recorded ran
# with: `evaluate`'s defaults.
EARLIER_TRAINING = {("train", "export_epoch"): "last"}
EVALUATION_DEFAULTS = {"restarts": 1, "seed": 0, "checks": True, "check_examples": 100}
_PARTS = {"data": cfglib.DataConfig, "model": cfglib.ModelConfig, "method": cfglib.MethodConfig,
          "attack": cfglib.AttackConfig, "train": cfglib.TrainConfig}


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    """A study: methods x seeds, each cell trained and evaluated alike.

    Attributes:
      run: the base training run, as `train` builds it from the same flags; each cell replaces
        its method, seed and folders (`cell_run_config`).
      methods: method names, in the order cells run (method-major).
      seeds: training seeds; the same seed gives every method the same data order and initial
        weights, so differences can be paired by seed.
      baseline: the method every other one is compared with.
      attacks: attack names (evaluation.suite), lower case.
      test_examples: the first this many test images (0: all) for every attack ...
      attack_examples: ... but these ((attack, N), ...), evaluated on the first N only.
      eval_step_size: the PGD/CW step of the evaluation (the training adversary's is in `run`).
      eval_seed: seed of the evaluation's random starts.
      restarts, checks, check_examples: as for `evaluate`.
      out: the study's folder (cells/, results.jsonl, summary.md, compare.png, settings.json).
      work_dir: run folders and exports, one folder per cell.
      cell: run only this cell (an index of the plan), or None: every unfinished cell.
      list_cells: print the plan and each cell's status, and do nothing else.
      command: the command line, for the summary.
    """

    run: RunConfig
    methods: Tuple[str, ...]
    seeds: Tuple[int, ...]
    baseline: str
    attacks: Tuple[str, ...]
    out: str
    work_dir: str
    eval_step_size: float
    test_examples: int = 0
    attack_examples: Tuple[Tuple[str, int], ...] = ()
    eval_seed: int = 0
    restarts: int = 1
    checks: bool = True
    check_examples: int = 100
    cell: Optional[int] = None
    list_cells: bool = False
    command: str = ""


def parse_seeds(raw: Sequence[str]) -> Tuple[int, ...]:
    """`["0", "1", "2"]` -> (0, 1, 2); one line for anything that is not integers >= 0."""
    items = [str(item).strip() for item in raw]
    check(bool(items) and all(item.isdigit() for item in items),
          f"--seeds must be integers >= 0, comma-separated (e.g. 0,1,2); received: "
          f"{','.join(items)}")
    return tuple(int(item) for item in items)


def parse_attack_examples(raw: Sequence[str]) -> Tuple[Tuple[str, int], ...]:
    """`["autoattack1000:1000"]` -> (("autoattack1000", 1000),)."""
    parsed = []
    for item in raw:
        name, sep, count = str(item).strip().rpartition(":")
        check(bool(sep) and bool(name) and count.isdigit() and int(count) >= 1,
              f"--attack_examples items must be NAME:N with N >= 1 (e.g. autoattack1000:1000); "
              f"received: {item!r}")
        parsed.append((name.strip().lower(), int(count)))
    return tuple(parsed)


def _no_repeats(name: str, items: Sequence) -> None:
    repeated = sorted({str(i) for i in items if list(items).count(i) > 1})
    check(not repeated, f"--{name} names {', '.join(repeated)} more than once; accepted: "
                        "distinct values")


def validate_compare(cfg: CompareConfig, *, known_methods: Sequence[str]) -> CompareConfig:
    """Checks what a user can get wrong; returns cfg unchanged when it is sound.

    Args:
      cfg: the config.
      known_methods: the names the methods registry knows.
    """
    check(bool(cfg.out), "--output_dir is not set: pass the study's folder, e.g. "
                         "--output_dir=benchmarks/results/mnist_seeds")
    check(len(cfg.methods) > 0, "--methods is empty; accepted: methods, comma-separated, e.g. "
                                "alp,aalp")
    for method in cfg.methods:
        check(method in known_methods, f"--methods names an unknown method: received "
                                       f"{method!r}; accepted: {', '.join(known_methods)}")
    _no_repeats("methods", cfg.methods)
    _no_repeats("seeds", cfg.seeds)
    check(cfg.baseline in cfg.methods, f"--baseline={cfg.baseline} is not among --methods; "
                                       f"accepted: {', '.join(cfg.methods)}")
    check(len(cfg.attacks) > 0, "--attacks is empty: name at least one, e.g. clean,pgd40")
    _no_repeats("attacks", cfg.attacks)
    for name, count in cfg.attack_examples:
        check(name in cfg.attacks, f"--attack_examples names {name}, which is not in --attacks; "
                                   f"accepted: one of {', '.join(cfg.attacks)}")
        check(not cfg.test_examples or count <= cfg.test_examples,
              f"--attack_examples {name}:{count} exceeds --test_examples={cfg.test_examples}; "
              f"accepted: N in 1..{cfg.test_examples}")
    _no_repeats("attack_examples", [name for name, _ in cfg.attack_examples])
    check(0.0 < cfg.eval_step_size <= 1.0,
          f"--eval_step_size must be in (0, 1]; received: {cfg.eval_step_size}")
    check(cfg.restarts >= 1, f"--restarts must be >= 1; received: {cfg.restarts}")
    check(cfg.check_examples >= 1,
          f"--check_examples must be >= 1; received: {cfg.check_examples}")
    check(not (cfg.list_cells and cfg.cell is not None),
          f"--list_cells lists every cell and runs none; received it with --cell={cfg.cell}")
    cells = len(cfg.methods) * len(cfg.seeds)
    check(cfg.cell is None or 0 <= cfg.cell < cells,
          f"--cell={cfg.cell} is not a cell of this study; accepted: 0..{cells - 1} "
          "(see --list_cells)")
    return cfg


def cell_name(method: str, seed: int) -> str:
    return f"{method}-seed{seed}"


def cell_folder(cfg: CompareConfig, method: str, seed: int) -> pathlib.Path:
    return pathlib.Path(cfg.work_dir) / cell_name(method, seed)


def cell_run_config(cfg: CompareConfig, method: str, seed: int) -> RunConfig:
    """The cell's training run: the base run with the cell's method, seed and folders."""
    folder = cell_folder(cfg, method, seed)
    run = cfg.run
    return run.replace(
        data=dataclasses.replace(run.data, test_examples=0),
        method=dataclasses.replace(run.method, name=method),
        train=dataclasses.replace(run.train, seed=seed, model_dir=str(folder / "run"),
                                  export_dir=str(folder / "export"), export_name=EXPORT_NAME))


def examples_per_attack(cfg: CompareConfig, test_count: int) -> Dict[str, int]:
    """{attack: the number of test images it is evaluated on}, in --attacks order.

    Args:
      cfg: the config.
      test_count: the images --test_examples means (the whole test split when it is 0).
    """
    chosen = dict(cfg.attack_examples)
    return {name: chosen.get(name, test_count) for name in cfg.attacks}


def evaluation_groups(examples: Dict[str, int]) -> List[Tuple[int, List[str]]]:
    """[(N, attacks evaluated on the first N images)], the largest N first (it runs the checks)."""
    groups: Dict[int, List[str]] = {}
    for name, count in examples.items():
        groups.setdefault(count, []).append(name)
    return sorted(groups.items(), key=lambda item: -item[0])


def training_settings(config: dict) -> dict:
    """A run config (as JSON) without the cell's own fields; fields the config lacks (a cell
    written by older code) take the value that code had (EARLIER_TRAINING, else the default),
    and fields the code no longer has are dropped."""
    settings = {}
    for part, kind in _PARTS.items():
        stored = config.get(part, {})
        values = {}
        for field in dataclasses.fields(kind):
            if (part, field.name) in CELL_FIELDS:
                continue
            if field.name in stored:
                values[field.name] = stored[field.name]
            elif field.default is not dataclasses.MISSING:
                values[field.name] = EARLIER_TRAINING.get((part, field.name), field.default)
        settings[part] = values
    return settings


def study_settings(cfg: CompareConfig, examples: Dict[str, int]) -> dict:
    """What every cell of this study shares, and a rerun must keep: settings.json's content."""
    return {"training": training_settings(dataclasses.asdict(cfg.run)),
            "evaluation": {"examples": dict(examples), "epsilon": cfg.run.attack.epsilon,
                           "step_size": cfg.eval_step_size, "restarts": cfg.restarts,
                           "seed": cfg.eval_seed, "checks": cfg.checks,
                           "check_examples": cfg.check_examples}}


def stored_settings(stored: dict) -> dict:
    """A settings.json as this code writes it: training fields added since it was written take
    the value the code of its day had (as `training_settings` does for a cell's config)."""
    return {**stored, "training": training_settings(stored.get("training", {}))}


def cell_settings(record: dict) -> dict:
    """The study settings a finished cell's JSON was produced with (missing keys: defaults)."""
    evaluation = {**EVALUATION_DEFAULTS, **record.get("evaluation", {})}
    return {"training": training_settings(record.get("config", {})),
            "evaluation": {key: evaluation.get(key) for key in
                           ("examples", "epsilon", "step_size", "restarts", "seed", "checks",
                            "check_examples")}}


def absolute(path: str) -> str:
    """An absolute path: run folders record where they live, and every process must agree."""
    return os.path.abspath(os.path.expanduser(path))
