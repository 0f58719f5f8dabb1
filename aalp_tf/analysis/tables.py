"""Markdown tables of the analyses (the paper's Tables 1 and 4) and one-line summaries."""
from typing import Dict

import numpy as np

from aalp_tf.analysis.quantities import CONSISTENT, INCONSISTENT, SETS
from aalp_tf.config import AttackConfig

_TABLE1 = (("p_clean", "AvgProbs_clean", "percent"), ("p_adv", "AvgProbs_adv", "percent"),
           ("ce_clean", "CE clean", "loss"), ("ce_adv", "CE adv", "loss"),
           ("classification_loss", "classification loss ½(CE clean + CE adv)", "loss"),
           ("alp", "ALP loss", "loss"))


def _cell(value, kind: str) -> str:
    if value is None:
        return "—"
    return f"{100 * value:.2f}%" if kind == "percent" else f"{value:.4f}"


def describe(values: np.ndarray) -> dict:
    """Summary of a contribution vector: spread, and how much of the total its top 10% hold."""
    values = np.sort(np.asarray(values, np.float64))[::-1]
    top = max(1, len(values) // 10)
    total = values.sum()
    return {"mean": float(values.mean()), "median": float(np.median(values)),
            "p90": float(np.percentile(values, 90)), "max": float(values[0]),
            "top10_share": float(values[:top].sum() / total) if total > 0 else None}


def sets_markdown(stats: Dict[str, dict], *, attack: AttackConfig) -> str:
    """Table 1 (per-set means) and Table 4 (consistent share) for every model."""
    examples = next(iter(stats.values()))["examples"]
    lines = ["# Consistent and inconsistent sets (§2.2)", "",
             f"{examples} test images; adversarial examples: PGD-{attack.steps}, epsilon "
             f"{attack.epsilon:.6g}, step {attack.step_size:.6g}, cross-entropy of the true "
             "label. Consistent: clean and adversarial both right. Inconsistent: clean right, "
             "adversarial wrong. Images whose clean version is wrong are in neither set.", "",
             "## Table 1: means over each set", "",
             "| model | set | examples | " + " | ".join(t for _, t, _ in _TABLE1) + " |",
             "|---|---|---|" + "---|" * len(_TABLE1)]
    for model, table in stats.items():
        for name in SETS:
            row = table[name]
            cells = [_cell(row[key], kind) for key, _, kind in _TABLE1]
            lines.append(f"| {model} | {name} | {row['count']} | " + " | ".join(cells) + " |")
    lines += ["", "## Table 4: share of the test images in each set", "",
              consistent_share_table(stats), ""]
    return "\n".join(lines)


def consistent_share_table(stats: Dict[str, dict]) -> str:
    """Table 4, with the clean and adversarial accuracy it sits between."""
    lines = ["| model | consistent | inconsistent | clean accuracy | adversarial accuracy |",
             "|---|---|---|---|---|"]
    for model, table in stats.items():
        cells = [_cell(table[CONSISTENT]["share"], "percent"),
                 _cell(table[INCONSISTENT]["share"], "percent"),
                 _cell(table["clean_accuracy"], "percent"),
                 _cell(table["adv_accuracy"], "percent")]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
