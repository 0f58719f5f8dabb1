"""The paper's figures as PNG files, with matplotlib's Agg backend (no display needed).

Each function takes numbers already computed (see `analysis.py`, `probes.py`), draws one figure
with a title, labelled axes and a legend, writes it and returns its path. Figures are built with
`matplotlib.figure.Figure` directly, never pyplot, so no global figure state is kept around.
"""
import math
import pathlib
from typing import Dict, List, Sequence

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import LogLocator, MaxNLocator  # noqa: E402

from aalp_tf.analysis.quantities import CONSISTENT, INCONSISTENT, consistency_split  # noqa: E402

SET_COLOURS = {CONSISTENT: "tab:blue", INCONSISTENT: "tab:red"}  # the paper's Fig. 11 colours
_DPI = 110


def _panels(count: int, *, title: str, width=4.2, height=3.6, columns=3):
    columns = 2 if count == 4 else min(columns, count)  # 2x2 rather than 3 + 1
    rows = math.ceil(count / columns)
    # At least 7 inches wide, so the figure title fits over a single panel.
    fig = Figure(figsize=(max(7.0, width * columns), height * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[count:]:
        ax.set_visible(False)
    fig.suptitle(title)
    return fig, axes[:count]


def _save(fig, path) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI)
    return path


def _log_x(ax) -> None:
    """Log x axis with minor ticks at 2 and 5 only: labels at every minor tick collide."""
    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))


def _log_y_if_wide(ax, values) -> None:
    """Log y axis when the values span more than a factor of 20 (else a linear one reads better)."""
    values = np.asarray([v for v in values if v is not None and v > 0], np.float64)
    if values.size and values.max() > 20 * values.min():
        ax.set_yscale("log")
    else:
        ax.ticklabel_format(axis="y", useOffset=False)


def _log_bins(arrays: Sequence[np.ndarray], bins: int) -> np.ndarray:
    """Shared log-spaced bins over every positive value (contributions span decades)."""
    positive = np.concatenate([a[a > 0] for a in arrays])
    low, high = positive.min(), positive.max()
    return np.geomspace(low, high * (1 + 1e-9), bins + 1) if high > low else np.array(
        [low * 0.9, low * 1.1])


def contribution_histograms(contributions: Dict[str, Dict[str, np.ndarray]], path, *,
                            bins=40) -> pathlib.Path:
    """Fig. 1 / Fig. 7: the distribution of C (Eq. 5) over the features, one curve per model.

    Args:
      contributions: {model: {"clean": [F], "adversarial": [F]}}.
    """
    kinds = ["clean", "adversarial"]
    fig, axes = _panels(2, title="Feature contribution C = mean |∂CE/∂A_fc| (Eq. 5)",
                        width=5.6)
    for ax, kind in zip(axes, kinds):
        values = {m: np.asarray(c[kind]) for m, c in contributions.items()}
        edges = _log_bins(list(values.values()), bins)
        for model, v in values.items():
            ax.hist(np.clip(v, edges[0], None), bins=edges, histtype="step", linewidth=1.6,
                    label=f"{model} (median {np.median(v):.2g})")
        _log_x(ax)
        ax.set_title(f"on {kind} test images")
        ax.set_xlabel("feature contribution C (log scale)")
        ax.set_ylabel("number of features")
        ax.legend(fontsize="small")
    return _save(fig, path)


def grad_cam_grid(*, clean: np.ndarray, adversarial: Dict[str, np.ndarray],
                  maps: Dict[str, np.ndarray], labels: np.ndarray,
                  predictions: Dict[str, np.ndarray], layer: str, path) -> pathlib.Path:
    """Fig. 2 / Fig. 8: Grad-CAM (Eq. 6) of adversarial examples, a row per model.

    Args:
      clean: the K clean images [K, H, W, C] (top row).
      adversarial: {model: [K, H, W, C]} the adversarial images each row's maps are over.
      maps: {model: [K, H, W]} upsampled maps scaled to a maximum of 1.
      labels: [K] true labels; predictions: {model: [K]} classes on the adversarial images.
      layer: the conv layer the maps were taken at (for the title).
    """
    models, k = list(maps), len(labels)
    fig = Figure(figsize=(1.45 * k + 1.6, 1.55 * (len(models) + 1) + 0.9), layout="constrained")
    axes = fig.subplots(len(models) + 1, k, squeeze=False)
    gray = dict(cmap="gray", vmin=0.0, vmax=1.0)
    for j in range(k):
        axes[0, j].imshow(_displayable(clean[j]), **gray)
        axes[0, j].set_title(f"label {labels[j]}", fontsize="small")
    image = None
    for i, model in enumerate(models, start=1):
        for j in range(k):
            ax = axes[i, j]
            ax.imshow(_displayable(adversarial[model][j]), **gray)
            image = ax.imshow(maps[model][j], cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
            right = predictions[model][j] == labels[j]
            ax.set_title(f"adv → {predictions[model][j]}", fontsize="small",
                         color="green" if right else "red")
    for row, name in enumerate(["clean input"] + models):
        axes[row, 0].set_ylabel(name)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    for j in range(k):
        axes[-1, j].set_xlabel(f"test image {j}", fontsize="small")
    fig.colorbar(image, ax=axes[1:, :], shrink=0.8, label="Grad-CAM, scaled to its maximum")
    fig.legend(handles=[Patch(color="green", label="adversarial example still classified right"),
                        Patch(color="red", label="adversarial example misclassified (→ class)")],
               loc="outside lower center", ncols=2, fontsize="small")
    fig.suptitle(f"Grad-CAM relu(∂CE/∂A ⊙ A) at layer {layer} on PGD examples (Eq. 6)")
    return _save(fig, path)


def _displayable(image: np.ndarray) -> np.ndarray:
    return image[..., 0] if image.shape[-1] == 1 else image


def confidence_scatter(measures: Dict[str, dict], path) -> pathlib.Path:
    """Fig. 11: true-class probability, clean (x) against adversarial (y), sets coloured."""
    fig, axes = _panels(len(measures), title="Clean vs adversarial confidence of the true class "
                                             "(Fig. 11)")
    for ax, (model, m) in zip(axes, measures.items()):
        consistent, inconsistent = consistency_split(clean_correct=m["clean_correct"],
                                                     adv_correct=m["adv_correct"])
        neither = ~(consistent | inconsistent)
        n = len(consistent)
        for mask, colour, name in ((neither, "0.7", "clean wrong (neither set)"),
                                   (consistent, SET_COLOURS[CONSISTENT], CONSISTENT),
                                   (inconsistent, SET_COLOURS[INCONSISTENT], INCONSISTENT)):
            ax.scatter(m["p_clean"][mask], m["p_adv"][mask], s=9, c=colour, alpha=0.6,
                       linewidths=0, label=f"{name}: {mask.sum()} ({100 * mask.mean():.1f}%)")
        ax.plot([0, 1], [0, 1], color="black", linestyle=":", linewidth=1, label="y = x")
        ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), title=f"{model} ({n} test images)",
               xlabel="clean p(true class)", ylabel="adversarial p(true class)")
        ax.legend(fontsize="x-small", loc="upper left")
    return _save(fig, path)


def set_curves(curves: Dict[str, Dict[str, dict]], path, *, ylabel="mean ALP loss "
               "‖z_clean − z_adv‖²") -> pathlib.Path:
    """Fig. 4: the mean ALP loss of the consistent and inconsistent sets over training.

    Args:
      curves: {model: {"fixed": analysis.set_means_over_time(..., fixed_by_last=True),
        "own": the same with fixed_by_last=False}}.
    """
    fig, axes = _panels(len(curves), title="ALP loss of the consistent and inconsistent sets "
                                           "during training (Fig. 4)")
    for ax, (model, both) in zip(axes, curves.items()):
        for split, style, note in (("fixed", "-", "sets of the last epoch"),
                                   ("own", "--", "each epoch's own sets")):
            c = both[split]
            for name in (CONSISTENT, INCONSISTENT):
                y = [np.nan if v is None else v for v in c[name]]
                ax.plot(c["epoch"], y, style, marker="o", markersize=3,
                        color=SET_COLOURS[name], label=f"{name}, {note}")
        _log_y_if_wide(ax, [v for c in both.values() for name in (CONSISTENT, INCONSISTENT)
                            for v in c[name]])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(title=model, xlabel="epoch", ylabel=ylabel)
        ax.legend(fontsize="x-small")
    return _save(fig, path)


def _spread(items: list, most: int) -> list:
    """At most `most` items, evenly spaced, always including the first and the last."""
    if len(items) <= most:
        return items
    picks = np.unique(np.linspace(0, len(items) - 1, most).round().astype(int))
    return [items[i] for i in picks]


def contribution_over_training(per_model: Dict[str, List[tuple]], path, *, bins=40,
                               most=8) -> pathlib.Path:
    """Fig. 9: the histogram of C (Eq. 5) at successive epochs, a panel per model.

    Args:
      per_model: {model: [(epoch, [F] contributions), ...]} in epoch order.
    """
    fig, axes = _panels(len(per_model), title="Feature contribution C during training (Fig. 9)")
    for ax, (model, points) in zip(axes, per_model.items()):
        points = _spread(points, most)
        edges = _log_bins([np.asarray(c) for _, c in points], bins)
        colours = matplotlib.colormaps["viridis"](np.linspace(0, 0.9, len(points)))
        for colour, (epoch, c) in zip(colours, points):
            ax.hist(np.clip(np.asarray(c), edges[0], None), bins=edges, histtype="step",
                    color=colour, linewidth=1.4, label=f"epoch {epoch}")
        _log_x(ax)
        ax.set(title=model, xlabel="feature contribution C (log scale)",
               ylabel="number of features")
        ax.legend(fontsize="x-small")
    return _save(fig, path)


# Each curve's history keys, newest first: runs written before the validation loss was named
# val_ce_clean logged it as val_loss.
_CURVES = ((("val_ce_clean", "val_loss"), "validation loss (clean CE)"),
           (("val_clean_accuracy",), "validation clean accuracy"),
           (("val_robust_accuracy",), "validation PGD accuracy"))


def training_curves(histories: Dict[str, List[dict]], path) -> pathlib.Path:
    """Fig. 12: validation loss, clean and adversarial accuracy per epoch, a line per model."""
    fig, axes = _panels(3, title="Convergence: loss and accuracy over training (Fig. 12)")
    for ax, (keys, label) in zip(axes, _CURVES):
        for model, history in histories.items():
            points = [(h["epoch"], next(h[k] for k in keys if k in h)) for h in history
                      if any(k in h for k in keys)]
            if points:
                ax.plot(*zip(*points), marker="o", markersize=3, label=model)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(title=label, xlabel="epoch", ylabel=label.split(" (")[0])
        ax.legend(fontsize="small")
    return _save(fig, path)
