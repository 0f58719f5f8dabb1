"""Figures on edge cases (a zero map, empty sets, many epochs) and the tables' numbers.

Every figure of a real run is checked in test_analyze.py.
"""
import numpy as np
import pytest

from aalp_tf.analysis import figures, quantities, tables
from aalp_tf.config import AttackConfig
from tests.helpers.images import assert_sensible_png

def measures(seed, n=40):
    rng = np.random.default_rng(seed)
    clean, adv = rng.normal(size=(n, 10)) * 3, rng.normal(size=(n, 10)) * 3
    return quantities.per_example_measures(clean_logits=clean, adv_logits=adv,
                                         labels=rng.integers(0, 10, n))


def records(seed, epochs=3, features=64):
    rng = np.random.default_rng(seed)
    return [{"epoch": e, "measures": {k: v.tolist() for k, v in measures(seed + e).items()},
             "contribution": rng.gamma(2.0, 0.01 / e, features).tolist()}
            for e in range(1, epochs + 1)]


def test_grad_cam_grid(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(3, 28, 28, 1))
    path = figures.grad_cam_grid(
        clean=images, adversarial={"a": images, "b": images},
        maps={"a": rng.uniform(size=(3, 28, 28)), "b": np.zeros((3, 28, 28))},
        labels=np.array([1, 2, 3]), predictions={"a": np.array([1, 0, 3]),
                                                 "b": np.array([0, 0, 0])},
        layer="conv2", path=tmp_path / "cam.png")
    assert_sensible_png(path, min_size=(400, 300))


def test_training_figures(tmp_path):
    runs = {"alp": records(0), "aalp": records(5, epochs=12)}
    curves = {m: {split: quantities.set_means_over_time(records=r, fixed_by_last=fixed)
                  for split, fixed in (("fixed", True), ("own", False))}
              for m, r in runs.items()}
    assert_sensible_png(figures.set_curves(curves, tmp_path / "alp.png"))
    per_model = {m: [(x["epoch"], x["contribution"]) for x in r] for m, r in runs.items()}
    assert_sensible_png(figures.contribution_over_training(per_model, tmp_path / "c.png"))
    history = [{"epoch": e, "val_ce_clean": 1 / e, "val_clean_accuracy": 0.5 + e / 10,
                "val_robust_accuracy": e / 10} for e in range(1, 4)]
    older = [dict(h, val_loss=h.pop("val_ce_clean")) for h in [dict(x) for x in history]]
    assert_sensible_png(figures.training_curves({"alp": history, "aalp (older run)": older},
                                                tmp_path / "t.png"))


def test_the_sets_tables_hold_the_statistics():
    clean = np.array([[2.0, 0.0], [2.0, 0.0], [0.0, 2.0], [0.0, 2.0]])
    adv = np.array([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 2.0]])
    stats = {"alp": quantities.set_statistics(measures=quantities.per_example_measures(
        clean_logits=clean, adv_logits=adv, labels=np.zeros(4, np.int64)))}
    inconsistent = stats["alp"]["inconsistent"]
    md = tables.sets_markdown(stats, attack=AttackConfig(epsilon=0.3, step_size=0.01, steps=40))
    assert "4 test images; adversarial examples: PGD-40, epsilon 0.3, step 0.01" in md
    assert (f"| alp | inconsistent | 1 | {100 * inconsistent['p_clean']:.2f}% | "
            f"{100 * inconsistent['p_adv']:.2f}% | {inconsistent['ce_clean']:.4f} | "
            f"{inconsistent['ce_adv']:.4f} | {inconsistent['classification_loss']:.4f} | "
            "8.0000 |") in md.splitlines()
    assert "| alp | inconsistent | 1 | 88.08% | 11.92% |" in md
    assert tables.consistent_share_table(stats).splitlines()[-1] == (
        "| alp | 25.00% | 25.00% | 50.00% | 50.00% |")


def test_describe_reports_the_share_of_the_top_tenth():
    summary = tables.describe(np.array([10.0] + [1.0] * 9))
    assert summary["top10_share"] == pytest.approx(10 / 19)
    assert summary["max"] == 10.0 and summary["median"] == 1.0
