"""The cell plan of a study, where each cell's files live, and what state the study is in.

A cell is one (method, seed). Its finished record is `<out>/cells/<method>-seed<seed>.json`,
written atomically once its evaluation is done: a cell is finished exactly when that file
exists. Everything else a cell writes (run folder, export, evaluation records) lives in its own
`<work_dir>/<cell>/`, so processes running different cells never write the same file, except
the study's outputs, which every writer regenerates whole from the finished cells.

No TensorFlow here: `--list_cells` and the checks before any work read files only.
"""
import contextlib
import dataclasses
import fcntl
import json
import pathlib
from typing import Dict, Iterator, List

from aalp_tf.comparison import config as comparison_config
from aalp_tf.comparison.config import CompareConfig
from aalp_tf.config import differences
from aalp_tf.errors import UsageError
from aalp_tf.files import write_once

SETTINGS = "settings.json"


@dataclasses.dataclass(frozen=True)
class Cell:
    """One (method, seed) of the plan; `index` is its place in --list_cells (and --cell)."""

    index: int
    method: str
    seed: int

    @property
    def name(self) -> str:
        return comparison_config.cell_name(self.method, self.seed)


def plan(cfg: CompareConfig) -> List[Cell]:
    """Every cell, method-major: the baseline's seeds finish before the next method starts."""
    pairs = [(method, seed) for method in cfg.methods for seed in cfg.seeds]
    return [Cell(index=i, method=m, seed=s) for i, (m, s) in enumerate(pairs)]


def record_path(cfg: CompareConfig, cell: Cell) -> pathlib.Path:
    return pathlib.Path(cfg.out) / "cells" / f"{cell.name}.json"


def folder(cfg: CompareConfig, cell: Cell) -> pathlib.Path:
    return comparison_config.cell_folder(cfg, cell.method, cell.seed)


def evaluation_path(cfg: CompareConfig, cell: Cell, count: int) -> pathlib.Path:
    return folder(cfg, cell) / f"eval-{count}.json"


def read_json(path: pathlib.Path):
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise UsageError(f"{path} is not valid JSON; accepted: move it away and run the same "
                         "command again") from None


def finished(cfg: CompareConfig, cells: List[Cell]) -> Dict[str, dict]:
    """{cell name: its record} for the cells of `cells` that are finished, in plan order."""
    return {cell.name: read_json(record_path(cfg, cell)) for cell in cells
            if record_path(cfg, cell).exists()}


def status(cfg: CompareConfig, cell: Cell) -> str:
    """finished, trained (evaluation to do), started:<epochs done>/<epochs>, or pending."""
    if record_path(cfg, cell).exists():
        return "finished"
    history = folder(cfg, cell) / "run" / "history.json"
    done = len(read_json(history)) if history.exists() else 0
    epochs = cfg.run.train.epochs
    if done >= epochs:
        return "trained"
    return f"started:{done}/{epochs}" if done else "pending"


def listing(cfg: CompareConfig, cells: List[Cell]) -> List[str]:
    """--list_cells: `K<TAB>method<TAB>seed<TAB>status` per cell."""
    return [f"{c.index}\t{c.method}\t{c.seed}\t{status(cfg, c)}" for c in cells]


def check_settings(cfg: CompareConfig, settings: dict) -> None:
    """Refuses a study folder whose settings.json or finished cells have other settings.

    Cells outside this command's plan count too: --methods and --seeds may grow or shrink, the
    budget and the evaluation may not change under any cell.
    """
    out = pathlib.Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output_dir {out} is a file; accepted: a folder (new or holding this study)")
    stored = out / SETTINGS
    if stored.exists():
        _refuse(cfg, stored.name, differences(
            comparison_config.stored_settings(read_json(stored)), settings))
    for path in sorted((out / "cells").glob("*.json")):
        record = read_json(path)
        _refuse(cfg, f"cells/{path.name}", differences(
            comparison_config.cell_settings(record), settings))


def _refuse(cfg: CompareConfig, where: str, changed: List[str]) -> None:
    if changed:
        raise UsageError(f"--output_dir {cfg.out} holds a study with other settings ({where}: "
                         f"{'; '.join(changed[:3])}); accepted: the same settings (--methods "
                         "and --seeds may grow), or a new --output_dir")


def write_settings(cfg: CompareConfig, settings: dict) -> None:
    """Writes settings.json unless it exists, first writer wins, so two processes starting at
    once cannot mix."""
    if not write_once(pathlib.Path(cfg.out) / SETTINGS, json.dumps(settings, indent=1) + "\n"):
        check_settings(cfg, settings)  # another process won: it must have had our settings


class CellBusy(Exception):
    """Another process holds the cell's lock."""


@contextlib.contextmanager
def locked(cfg: CompareConfig, cell: Cell) -> Iterator[None]:
    """Holds the cell's lock while it runs, so one cell never runs twice at once (a job array
    resubmitted while its first run still works). The kernel drops the lock when the process
    dies, however it dies, so a killed cell never stays locked."""
    path = folder(cfg, cell) / "lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CellBusy(cell.name) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
