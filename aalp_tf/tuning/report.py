"""A search's results: one row per trial, as a printed table, a CSV and the paper's Fig. 6.

Fig. 6 of the paper plots clean and robust accuracy against α; `alpha.png` does the same with
each completed trial's validation accuracies (the test set is never used for selection).
"""
import csv
import pathlib
from typing import Iterable, List, Optional

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

from aalp_tf.tuning import search_space  # noqa: E402
from aalp_tf.tuning.config import TuneConfig  # noqa: E402

COLUMNS = ("trial", "status", "alpha", "learning_rate", "keep_fraction", "epochs",
           "val_clean_accuracy", "val_robust_accuracy", "objective", "message")
FAILURE_FILE = "failure.txt"  # a failed trial's traceback, beside KerasTuner's trial.json


def _metric(trial, name: str) -> Optional[float]:
    return float(trial.metrics.get_last_value(name)) if trial.metrics.exists(name) else None


def last_line(text: Optional[str]) -> str:
    """A traceback's last line: the exception and its message."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _message(trial, trial_dir: pathlib.Path) -> str:
    """The error's last line; a worker's trial comes without it over gRPC, so read its file."""
    text = trial.message
    if not text and (trial_dir / FAILURE_FILE).is_file():
        text = (trial_dir / FAILURE_FILE).read_text()
    return last_line(text)


def trial_rows(trials: Iterable, cfg: TuneConfig, folder) -> List[dict]:
    """One row per KerasTuner trial, in trial order."""
    rows = []
    for trial in sorted(trials, key=lambda t: int(t.trial_id)):  # ids widen as trials grow
        values = trial.hyperparameters.values
        # Not trial_config: a failed trial's values may be the very reason it failed.
        chosen = search_space.trial_values(cfg, values) if search_space.ALPHA in values else {}
        completed = trial.status == "COMPLETED"
        rows.append({
            "trial": trial.trial_id, "status": trial.status,
            **{name: chosen.get(name) for name in COLUMNS[2:6]},
            "val_clean_accuracy": _metric(trial, "val_clean_accuracy"),
            "val_robust_accuracy": _metric(trial, "val_robust_accuracy"),
            "objective": float(trial.score) if completed else None,
            "message": "" if completed else _message(trial,
                                                     folder.trial_run(trial.trial_id).parent),
        })
    return rows


def rank(trial_id: str, score: float) -> tuple:
    """Sort key, best first: the higher objective, then the earlier trial.

    KerasTuner breaks ties by its own trial order, which after a reload is the file system's;
    the table, the export and `get_best_models` all use this key instead.
    """
    return -score, int(trial_id)


def best_row(rows: List[dict]) -> Optional[dict]:
    """The best completed trial's row (see `rank`), or None."""
    done = [row for row in rows if row["status"] == "COMPLETED"]
    return min(done, key=lambda row: rank(row["trial"], row["objective"])) if done else None


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_table(rows: List[dict]) -> str:
    """A fixed-width table of the trials; the best is marked with *."""
    best = best_row(rows)
    cells = [list(COLUMNS)] + [[_cell(row[c]) for c in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS) - 1)]
    lines = []
    for i, line in enumerate(cells):
        mark = "*" if i and best is not None and rows[i - 1] is best else " "
        lines.append(mark + "  ".join(v.ljust(w) for v, w in zip(line, widths)) + "  " + line[-1])
    return "\n".join(line.rstrip() for line in lines)


def write_csv(rows: List[dict], path: pathlib.Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)


def plot_alpha(rows: List[dict], path: pathlib.Path, *, title: str, alpha_range) -> None:
    """Clean and robust validation accuracy against α (log axis), like the paper's Fig. 6.

    Only trials trained for the longest budget are drawn (Hyperband's shorter rounds are not
    comparable with them).
    """
    done = [row for row in rows if row["status"] == "COMPLETED"]
    longest = max((row["epochs"] for row in done), default=0)
    done = sorted((row for row in done if row["epochs"] == longest), key=lambda r: r["alpha"])
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    alphas = [row["alpha"] for row in done]
    ax.plot(alphas, [row["val_robust_accuracy"] for row in done], "o-", label="robust (PGD)")
    ax.plot(alphas, [row["val_clean_accuracy"] for row in done], "s--", label="clean")
    best = best_row(rows)
    if best is not None:
        ax.axvline(best["alpha"], color="gray", linestyle=":",
                   label=f"best α = {best['alpha']:.3g}")
    ax.set_xscale("log")
    ax.set_xlim(*alpha_range)  # the whole searched range, as Fig. 6 spans its α values
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("α (weight of the adaptive ALP term, Eq. 10)")
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(0.0, 1.0)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(rows: List[dict], cfg: TuneConfig, folder) -> None:
    """Prints the table and writes trials.csv and alpha.png into the search folder."""
    metric = search_space.OBJECTIVES.get(cfg.objective).metric
    print(f"trials of {folder.root} (objective: {metric}, on the validation slice)")
    print(format_table(rows))
    write_csv(rows, folder.trials_csv)
    run = cfg.run
    epochs = max([row["epochs"] or 0 for row in rows], default=0)
    plot_alpha(rows, folder.plot, alpha_range=cfg.alpha_range,
               title=f"{run.data.dataset} {run.method.name}: validation accuracy after {epochs} "
                     "epochs vs α")
    failed = sum(row["status"] != "COMPLETED" for row in rows)
    print(f"{len(rows) - failed} of {len(rows)} trials completed; wrote {folder.trials_csv} "
          f"and {folder.plot}")
