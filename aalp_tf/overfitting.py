"""The catastrophic-overfitting guard: single-step training can collapse within one epoch.

Wong et al. (2020) saw FGSM training collapse: within an epoch, accuracy under PGD falls to
near 0 while accuracy under the training adversary rises, because the model has learned to mask
the one gradient step it is trained against. The run's history shows it as:

    an epoch whose val_robust_accuracy (PGD on the validation slice) is below COLLAPSE_FRACTION
    of the best val_robust_accuracy of the epochs before it, that best being at least MIN_BEST
    (a run still at chance under attack has nothing to lose), while its adv_accuracy (accuracy
    on the training adversary's examples) rose over the epoch before.

The first such epoch and every epoch after it are out of the running for the best-epoch export
(`before_collapse`): the model after a collapse looks robust to its own adversary only. A PGD-
trained run whose validation robustness falls while its adversarial accuracy falls too is
diverging, not overfitting catastrophically, and is left to the ordinary best-epoch rule.
"""
import dataclasses
from typing import List, Optional, Sequence

import keras

ROBUST = "val_robust_accuracy"
ADV = "adv_accuracy"
COLLAPSE_FRACTION = 0.5
MIN_BEST = 0.2


@dataclasses.dataclass(frozen=True)
class Collapse:
    """One collapsed epoch and the evidence."""

    epoch: int
    robust: float  # its val_robust_accuracy
    best: float  # the best val_robust_accuracy before it
    best_epoch: int
    adv_before: float  # adv_accuracy of the epoch before it
    adv: float  # its adv_accuracy

    def describe(self) -> str:
        return (f"catastrophic overfitting at epoch {self.epoch}: {ROBUST} {self.robust:.4f} < "
                f"{COLLAPSE_FRACTION:g} x its best {self.best:.4f} (epoch {self.best_epoch}) "
                f"while {ADV} rose {self.adv_before:.4f} -> {self.adv:.4f}")


def collapses(history: Sequence[dict]) -> List[Collapse]:
    """Every collapsed epoch of a run's history (entries with "epoch" and the logged
    metrics, as history.json keeps them), in order."""
    found, best = [], None
    for before, entry in zip([None, *history[:-1]], history):
        if ROBUST not in entry:
            continue
        if best is not None and before is not None and ADV in entry and ADV in before and \
                best[ROBUST] >= MIN_BEST and entry[ROBUST] < COLLAPSE_FRACTION * best[ROBUST] \
                and entry[ADV] > before[ADV]:
            found.append(Collapse(entry["epoch"], entry[ROBUST], best[ROBUST], best["epoch"],
                                  before[ADV], entry[ADV]))
        if best is None or entry[ROBUST] > best[ROBUST]:
            best = entry
    return found


def collapsed_epochs(history: Sequence[dict]) -> List[int]:
    """The epochs of `history` at which validation robustness collapsed (usually none)."""
    return [c.epoch for c in collapses(history)]


def before_collapse(history: Sequence[dict]) -> list:
    """The entries the best-epoch export may choose from: those before the first collapse
    (all of them when there is none)."""
    found = collapses(history)
    if not found:
        return list(history)
    return [entry for entry in history if entry["epoch"] < found[0].epoch]


def export_note(history: Sequence[dict]) -> str:
    """What export.json's reason adds about a collapse ("" when there was none)."""
    found = collapses(history)
    if not found:
        return ""
    return (f"; {found[0].describe()}: epochs {found[0].epoch}-{history[-1]['epoch']} were not "
            "candidates")


class CollapseGuard(keras.callbacks.Callback):
    """Says in the log, in one line, when an epoch collapsed; optionally stops the run there.

    Put it after the callbacks that write the epoch's checkpoint: stopping ends `fit` after
    the epoch, whose checkpoint and history then exist; the best-epoch export skips it.

    Args:
      history: the entries of the epochs done before this `fit` (a resumed run's history).
      stop: end training at the first collapse (no later epoch can be exported by "best").
    """

    def __init__(self, history: Sequence[dict] = (), stop: bool = False):
        super().__init__()
        self.history = [dict(entry) for entry in history]
        self.stop = stop
        self.collapse: Optional[Collapse] = None

    def on_epoch_end(self, epoch, logs=None):
        self.history = [h for h in self.history if h["epoch"] <= epoch]
        self.history.append({"epoch": epoch + 1, **{k: float(v) for k, v in
                                                    (logs or {}).items()}})
        found = collapses(self.history)
        if not found or found[-1].epoch != epoch + 1:
            return
        self.collapse = self.collapse or found[-1]
        print(f"{found[-1].describe()}; --export_epoch=best exports an epoch before "
              f"{found[0].epoch}" + ("; training stops here" if self.stop else ""), flush=True)
        if self.stop:
            self.model.stop_training = True
