"""The study's outputs, made whole from the finished cells: results.jsonl, summary.md, compare.png.

Any process may write them at any time (each cell's process refreshes them when it finishes),
so they are never edited in place: each is rebuilt from the cell records and replaced
atomically, and a writer that finds more finished cells after writing writes again. The last
writer has therefore seen every cell finished before it stopped.
"""
import io
import json
import pathlib
from typing import Dict, List, Optional

import matplotlib

matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402

from aalp_tf.comparison import cells as cell_files  # noqa: E402
from aalp_tf.comparison import statistics  # noqa: E402
from aalp_tf.comparison.cells import Cell  # noqa: E402
from aalp_tf.comparison.config import CompareConfig  # noqa: E402
from aalp_tf.files import write_atomically  # noqa: E402

RESULTS, SUMMARY, FIGURE = "results.jsonl", "summary.md", "compare.png"
_DPI = 110


def refresh(cfg: CompareConfig, plan: List[Cell]) -> List[pathlib.Path]:
    """Rewrites the outputs until no cell finished while they were written; returns their paths
    (none while no cell is finished)."""
    written, seen = [], None
    while True:
        records = cell_files.finished(cfg, plan)
        if list(records) == seen:
            return written
        seen = list(records)
        if records:
            written = write_outputs(cfg, plan, list(records.values()))


def write_outputs(cfg: CompareConfig, plan: List[Cell], records: List[dict]
                  ) -> List[pathlib.Path]:
    """results.jsonl, summary.md and compare.png from `records` (plan order), each atomically."""
    out = pathlib.Path(cfg.out)
    paths = [out / RESULTS, out / SUMMARY, out / FIGURE]
    write_atomically(paths[0], "".join(json.dumps(r) + "\n" for r in records))
    write_atomically(paths[1], summary(cfg, plan, records))
    _write_png(paths[2], figure(cfg, records))
    return paths


def _by_seed(records: List[dict], method: str, attack: str) -> Dict[int, float]:
    """{seed: accuracy in %} of one method under one attack."""
    return {r["seed"]: 100 * r["accuracy"][attack] for r in records if r["method"] == method}


def _number(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _interval(s: statistics.Summary) -> str:
    return "n/a" if s.low is None else f"[{s.low:.2f}, {s.high:.2f}]"


def verdict(s: statistics.Summary) -> str:
    """The "excludes 0" column: which side of 0 the interval lies on, if it excludes 0."""
    if s.excludes_zero is None:
        return "n/a"
    if not s.excludes_zero:
        return "no"
    return "yes, above 0" if s.low > 0 else "yes, below 0"


def accuracy_table(cfg: CompareConfig, records: List[dict]) -> List[str]:
    """Markdown rows: per attack and method, accuracy (%) over seeds with its interval."""
    lines = ["| attack | method | n | mean | SD | 95% CI |", "|---|---|---|---|---|---|"]
    for attack in cfg.attacks:
        for method in cfg.methods:
            values = _by_seed(records, method, attack)
            if values:
                s = statistics.summarize(list(values.values()))
                lines.append(f"| {attack} | {method} | {s.n} | {s.mean:.2f} | {_number(s.sd)} "
                             f"| {_interval(s)} |")
    return lines


def difference_table(cfg: CompareConfig, records: List[dict]) -> List[str]:
    """Markdown rows: per attack and method, the difference from the baseline paired by seed."""
    lines = ["| attack | method | n | mean | SD | 95% CI | excludes 0 | detectable |",
             "|---|---|---|---|---|---|---|---|"]
    for attack in cfg.attacks:
        baseline = _by_seed(records, cfg.baseline, attack)
        for method in cfg.methods:
            s = statistics.paired(_by_seed(records, method, attack), baseline)
            if method != cfg.baseline and s is not None:
                detectable = statistics.detectable_difference(s.sd, s.n)
                lines.append(f"| {attack} | {method} | {s.n} | {s.mean:+.2f} | {_number(s.sd)} "
                             f"| {_interval(s)} | {verdict(s)} | {_number(detectable)} |")
    return lines


def cell_table(cfg: CompareConfig, records: List[dict]) -> List[str]:
    """Markdown rows: every finished cell's accuracies, failed checks and minutes."""
    lines = ["| cell | " + " | ".join(cfg.attacks) + " | failed checks | minutes |",
             "|---" * (len(cfg.attacks) + 3) + "|"]
    for r in records:
        shown = " | ".join(f"{100 * r['accuracy'][a]:.2f}" for a in cfg.attacks)
        failed = ", ".join(r["checks_failed"]) or "none"
        lines.append(f"| {r['cell']} | {shown} | {failed} | {r['seconds']['total'] / 60:.1f} |")
    return lines


def _evaluation_line(cfg: CompareConfig, records: List[dict]) -> str:
    groups: Dict[int, List[str]] = {}
    for attack, count in records[0]["evaluation"]["examples"].items():
        groups.setdefault(count, []).append(attack)
    images = "; ".join(f"{', '.join(names)} on the first {count} test images"
                       for count, names in groups.items())
    e = records[0]["evaluation"]
    return (f"Evaluation: epsilon {e['epsilon']:g}, PGD/CW step {e['step_size']:g}, "
            f"{e['restarts']} restart(s), seed {e['seed']}; {images}.")


def summary(cfg: CompareConfig, plan: List[Cell], records: List[dict]) -> str:
    """summary.md: the command, accuracy per method and attack over seeds, paired differences
    against the baseline, and every cell."""
    done = {r["cell"] for r in records}
    missing = [c.name for c in plan if c.name not in done]
    seeds = sorted({r["seed"] for r in records})
    t_values = ", ".join(f"t_0.975,{n - 1} = {statistics.t_quantile(n):.3f} for n = {n}"
                         for n in range(2, len(seeds) + 1)) or "none (one seed)"
    lines = [
        f"# {cfg.run.data.dataset}: {', '.join(cfg.methods)} over seeds "
        f"{', '.join(map(str, cfg.seeds))}", "",
        "```", cfg.command, "```", "",
        f"Finished cells: {len(records)} of {len(plan)}"
        + (f" (missing: {', '.join(missing)})." if missing else "."),
        "Every cell trains the same run (settings.json) with its own method and seed; the same "
        "seed gives every method the same data order and initial weights.",
        _evaluation_line(cfg, records), "",
        "## Accuracy (%) over seeds", "",
        "Per method and attack: the number of seeds n, the mean, the standard deviation (n - 1) "
        "and a 95% confidence interval for the mean, mean ± t_0.975,n-1 · SD / √n. Student's t, "
        "not the normal 1.96: with so few seeds the spread is itself estimated from them, and "
        "t accounts for that, taking seed-to-seed variation as roughly normal. With one seed "
        f"there is no spread to estimate (n/a). t values: {t_values}.", "",
        *accuracy_table(cfg, records), "",
        f"## Difference from {cfg.baseline} (percentage points), paired by seed", "",
        f"Per seed that both finished: the method's accuracy minus {cfg.baseline}'s with the "
        "same seed; then the mean, SD and 95% t-interval of those differences (n = the seeds "
        "paired). Pairing removes what a seed does to both methods alike (data order, initial "
        "weights), so the interval measures the methods' difference alone. \"excludes 0\": the "
        f"interval lies wholly above 0 (better than {cfg.baseline}) or wholly below it "
        "(worse). \"detectable\": the smallest true difference this many seeds would detect "
        f"(interval excluding 0) {statistics.POWER:.0%} of the time at the SD measured, from "
        "the noncentral t (statistics.detectable_difference): a difference smaller than it "
        "can hide in an interval that contains 0.", "",
        *difference_table(cfg, records), "",
        "## Cells", "", *cell_table(cfg, records), ""]
    return "\n".join(lines)


def figure(cfg: CompareConfig, records: List[dict]) -> Figure:
    """One panel per attack: each seed a dot; each method's mean a line across its column with
    its 95% t-interval as an error bar (none with one seed)."""
    count = len(cfg.attacks)
    columns = min(3, count)
    rows = -(-count // columns)
    width = max(7.0, columns * max(3.2, 0.8 * len(cfg.methods) + 1.2))
    fig = Figure(figsize=(width, 3.6 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[count:]:
        ax.set_visible(False)
    fig.suptitle(f"{cfg.run.data.dataset}: accuracy per seed (dots), mean and 95% t-interval "
                 "(bars)")
    seeds = sorted({r["seed"] for r in records})
    colours = matplotlib.colormaps["tab10"]
    for ax, attack in zip(axes, cfg.attacks):
        labelled = set()
        for x, method in enumerate(cfg.methods):
            values = _by_seed(records, method, attack)
            if not values:
                continue
            s = statistics.summarize(list(values.values()))
            error = None if s.low is None else [[s.mean - s.low], [s.high - s.mean]]
            ax.errorbar(x, s.mean, yerr=error, fmt="_", markersize=22, color="0.2", capsize=6,
                        elinewidth=1.5, zorder=2)
            for seed, value in values.items():
                # Seeds side by side within the method's column, so equal values stay visible.
                offset = 0.3 * (seeds.index(seed) + 0.5) / len(seeds) - 0.15
                ax.scatter(x + offset, value, s=20, zorder=3, color=colours(seeds.index(seed) % 10),
                           label=None if seed in labelled else f"seed {seed}")
                labelled.add(seed)
        ax.set_xticks(range(len(cfg.methods)), cfg.methods, rotation=30, ha="right")
        ax.set_xlim(-0.6, len(cfg.methods) - 0.4)
        ax.set_title(attack)
        ax.set_ylabel("accuracy (%)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize="small")
    return fig


def _write_png(path: pathlib.Path, fig: Figure) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    write_atomically(path, buffer.getvalue())  # it makes the folder
