"""Sanity checks against false robustness, reported by `evaluate` beside every result.

A model whose outputs are NaN or inf classifies nothing (argmax then answers class 0), and one
that returns probabilities, is random at inference or has vanishing gradients can look robust to
gradient attacks while it is not (Athalye et al. 2018; Carlini et al. 2019; AutoAttack's
own checks). A sound evaluation also sees accuracy fall with epsilon to ~0, iterative attacks at
least as strong as one step, and more steps or restarts never help the model. A failed check is a
warning, not an error: the numbers are still reported, with the warning beside them.

Every check runs on one small slice (evaluate: the first `--check_examples` test images) with its
own attacks, so it costs about 110 gradient evaluations of the slice: PGD takes 20 steps of
2.5 * epsilon / 20 (it can cross the ball whatever the dataset's step), APGD-CE 20 steps.
"""
import dataclasses
from typing import Callable, Dict, List

import numpy as np
import tensorflow as tf

from aalp_tf import attacks
from aalp_tf.errors import UsageError
from aalp_tf.evaluation import autoattack

CHECK_STEPS = 20
NEAR_ZERO = 0.02  # "accuracy reaches ~0" at epsilon = 1, where any image is reachable
SLACK = 0.01  # tolerance between different attacks: this share of the slice, at least 1 example


@dataclasses.dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    detail: str  # what was measured, and on failure what it suggests


class Probe:
    """The slice, the model, and accuracies under the checks' attacks, each computed once."""

    def __init__(self, logits_fn, x, labels, *, epsilon: float, seed: int = 0,
                 norm: str = "linf"):
        self.logits_fn, self.epsilon, self.seed = logits_fn, float(epsilon), seed
        self.norm = norm  # the threat model of every attack below
        self.x = tf.convert_to_tensor(x, tf.float32)
        self.labels = tf.cast(labels, tf.int64)
        self.n = int(self.x.shape[0])
        self.slack = max(SLACK, 1.0 / self.n)
        self._accuracy: Dict[tuple, float] = {}
        self._outputs = None

    def outputs(self) -> np.ndarray:
        """The model's outputs on the slice (one call, kept)."""
        if self._outputs is None:
            self._outputs = self.logits_fn(self.x).numpy()
        return self._outputs

    def accuracy(self, key: tuple, attack: Callable) -> float:
        if key not in self._accuracy:
            hits = ~attacks.misclassified(self.logits_fn(attack()), self.labels)
            self._accuracy[key] = float(tf.reduce_mean(tf.cast(hits, tf.float32)))
        return self._accuracy[key]

    def pgd(self, epsilon: float, steps: int = CHECK_STEPS, restarts: int = 1) -> float:
        if epsilon == 0:
            return self.accuracy(("clean",), lambda: self.x)
        # The same step for 10 and 20 steps, so the runs are nested; tensors, so that every
        # epsilon shares one trace.
        radius = tf.constant(epsilon, tf.float32)
        return self.accuracy(("pgd", epsilon, steps, restarts), lambda: attacks.pgd(
            self.logits_fn, self.x, self.labels, epsilon=radius,
            step_size=2.5 * radius / CHECK_STEPS, steps=steps, restarts=restarts,
            seed=(self.seed, 0), keep_best=True, norm=self.norm))

    def fgsm(self) -> float:
        return self.accuracy(("fgsm",), lambda: attacks.fgsm(
            self.logits_fn, self.x, self.labels, epsilon=self.epsilon, norm=self.norm))

    def apgd(self) -> float:
        return self.accuracy(("apgd-ce",), lambda: autoattack.apgd_ce(
            self.logits_fn, self.x, self.labels, epsilon=self.epsilon, steps=CHECK_STEPS,
            seed=(self.seed, 0), norm=self.norm))


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _finite_rows(out: np.ndarray) -> np.ndarray:
    return np.isfinite(out).all(axis=-1)


# The checks below that judge output values say so, and fail, when no output is finite.
NOTHING_FINITE = "cannot tell: every output is NaN or inf (see finite_outputs)"


def finite_outputs(probe: Probe) -> CheckResult:
    bad = int(np.sum(~_finite_rows(probe.outputs())))
    if bad:
        return CheckResult("finite_outputs", False, f"{bad} of {probe.n} examples get NaN or inf "
                           "outputs: non-finite weights (a diverged training run?) or an "
                           "overflow; their class is argmax's pick among NaNs and their gradient "
                           "NaN, so accuracies there mean nothing")
    return CheckResult("finite_outputs", True, f"all {probe.n} examples get finite outputs")


def logits_not_probabilities(probe: Probe) -> CheckResult:
    out = probe.outputs()
    out = out[_finite_rows(out)]  # NaN would make every comparison below False
    if not out.size:
        return CheckResult("logits_not_probabilities", False, NOTHING_FINITE)
    sums = out.sum(axis=-1)
    probabilities = out.min() >= 0 and out.max() <= 1 and np.allclose(sums, 1.0, atol=1e-4)
    if probabilities:
        return CheckResult("logits_not_probabilities", False, "every output row is in [0, 1] and "
                           "sums to 1: the model returns probabilities, not logits, and attacks "
                           "on them see flat losses; export the logits")
    return CheckResult("logits_not_probabilities", True,
                       f"outputs in [{out.min():.3g}, {out.max():.3g}], row sums "
                       f"[{sums.min():.3g}, {sums.max():.3g}]: logits")


def deterministic(probe: Probe) -> CheckResult:
    first, second = probe.logits_fn(probe.x).numpy(), probe.logits_fn(probe.x).numpy()
    both = np.isfinite(first) & np.isfinite(second)
    if not both.any() and np.array_equal(first, second, equal_nan=True):
        return CheckResult("deterministic", False, NOTHING_FINITE)
    gap = float(np.max(np.abs(first[both] - second[both]), initial=0.0))
    # NaN and inf at the same places are the same answer; anywhere else, a difference.
    if not np.allclose(first, second, rtol=1e-5, atol=1e-6, equal_nan=True):
        return CheckResult("deterministic", False, f"two identical calls differ by up to "
                           f"{gap:.3g} (or in where their outputs are NaN or inf): the model is "
                           "random at inference (dropout or noise left on?), so gradients are "
                           "noisy and accuracies not reproducible")
    return CheckResult("deterministic", True, f"two identical calls differ by {gap:.3g}")


def nonzero_gradients(probe: Probe) -> CheckResult:
    objective = attacks.cross_entropy_objective(probe.labels)
    grad, _ = attacks.input_gradient(probe.logits_fn, probe.x, objective)
    zero = int(tf.reduce_sum(tf.cast(tf.reduce_all(grad == 0, axis=[1, 2, 3]), tf.int32)))
    if zero:
        return CheckResult("nonzero_gradients", False, f"{zero} of {probe.n} examples have an "
                           "all-zero input gradient of the cross-entropy: PGD cannot move "
                           "them (masked gradients, or a saturated loss that APGD-T's DLR "
                           "avoids); Square needs no gradient")
    return CheckResult("nonzero_gradients", True, f"all {probe.n} input gradients are non-zero")


def accuracy_falls_with_epsilon(probe: Probe) -> CheckResult:
    grid = sorted({0.0, probe.epsilon / 2, probe.epsilon, 1.0})
    curve = [probe.pgd(e) for e in grid]
    shown = ", ".join(f"{e:.3g}: {_pct(a)}" for e, a in zip(grid, curve))
    detail = f"PGD-{CHECK_STEPS} accuracy by epsilon {shown}"
    rises = [(grid[i], grid[i + 1]) for i in range(len(grid) - 1)
             if curve[i + 1] > curve[i] + probe.slack]
    if rises:
        return CheckResult("accuracy_falls_with_epsilon", False, f"{detail}; accuracy rises "
                           f"from epsilon {rises[0][0]:.3g} to {rises[0][1]:.3g}: the attack "
                           "is failing, not the model succeeding")
    if curve[-1] > NEAR_ZERO:
        return CheckResult("accuracy_falls_with_epsilon", False, f"{detail}; above "
                           f"{_pct(NEAR_ZERO)} at epsilon 1, where any image is reachable: "
                           "gradients mislead the attack")
    return CheckResult("accuracy_falls_with_epsilon", True, detail)


def attack_strength_order(probe: Probe) -> CheckResult:
    fgsm, pgd, apgd = probe.fgsm(), probe.pgd(probe.epsilon), probe.apgd()
    detail = (f"FGSM {_pct(fgsm)} >= PGD-{CHECK_STEPS} {_pct(pgd)} >= APGD-CE-{CHECK_STEPS} "
              f"{_pct(apgd)}")
    if pgd > fgsm + probe.slack or apgd > pgd + probe.slack:
        return CheckResult("attack_strength_order", False, f"expected {detail}: an iterative "
                           "attack weaker than a single step (or APGD weaker than PGD) is a "
                           "sign of gradient masking")
    return CheckResult("attack_strength_order", True, detail)


def more_effort_never_helps(probe: Probe) -> CheckResult:
    base = probe.pgd(probe.epsilon, steps=CHECK_STEPS // 2)
    steps = probe.pgd(probe.epsilon, steps=CHECK_STEPS)
    restarts = probe.pgd(probe.epsilon, steps=CHECK_STEPS // 2, restarts=2)
    detail = (f"PGD-{CHECK_STEPS // 2} {_pct(base)}, PGD-{CHECK_STEPS} {_pct(steps)}, "
              f"PGD-{CHECK_STEPS // 2} with 2 restarts {_pct(restarts)}")
    # The longer runs contain the shorter one (same seed and step), so for a deterministic model
    # they can only find more: any rise means state or randomness in the model.
    if steps > base or restarts > base:
        return CheckResult("more_effort_never_helps", False, f"{detail}: more steps or "
                           "restarts raised accuracy, so the model changes between calls")
    return CheckResult("more_effort_never_helps", True, detail)


CHECKS = (finite_outputs, logits_not_probabilities, deterministic, nonzero_gradients,
          accuracy_falls_with_epsilon, attack_strength_order, more_effort_never_helps)


def require_images_in_range(x) -> None:
    """Refuses, in one line, test images that are not pixels in [0, 1]: an attack clips its
    examples to [0, 1], so on uint8-scaled or NaN images every number would be meaningless."""
    x = np.asarray(x)
    if x.size and not (np.all(x >= 0.0) and np.all(x <= 1.0)):  # NaN fails both
        finite = x[np.isfinite(x)]
        spread = (f"values in [{finite.min():g}, {finite.max():g}]" if finite.size
                  else "no finite value")
        raise UsageError(f"the test images must be float pixels in [0, 1]; received: {spread} "
                         f"and {x.size - finite.size} NaN or inf on the first {x.shape[0]} "
                         "images; accepted: images in [0, 1] (uint8 pixels divided by 255)")


def require_finite_outputs(logits_fn, x) -> None:
    """Refuses, in one line, a model whose every output on x is NaN or inf: no accuracy it
    could be given would mean anything. (Some non-finite outputs: finite_outputs warns.)"""
    out = logits_fn(x).numpy()
    if out.size and not np.isfinite(out).any():
        raise UsageError(f"the model's outputs are all NaN or inf, so there is nothing to "
                         f"evaluate; received: a model whose every logit on the first "
                         f"{out.shape[0]} test images is non-finite (NaN or inf weights, e.g. "
                         "from a diverged training run); accepted: a model with finite logits")


def run_checks(logits_fn, x, labels, *, epsilon: float, seed: int = 0,
               norm: str = "linf") -> List[CheckResult]:
    """Every check on the slice (x, labels), in order, in the threat model `norm`."""
    probe = Probe(logits_fn, x, labels, epsilon=epsilon, seed=seed, norm=norm)
    return [check(probe) for check in CHECKS]


def report_lines(results: List[CheckResult]) -> List[str]:
    """One line per check: `ok` or `WARNING`, its name and what it measured."""
    return [f"  {'ok     ' if r.passed else 'WARNING'} {r.name}: {r.detail}" for r in results]


def as_record(results: List[CheckResult], *, examples: int) -> dict:
    """For the evaluation JSON."""
    return {"examples": examples, "failed": [r.name for r in results if not r.passed],
            "results": {r.name: {"passed": r.passed, "detail": r.detail} for r in results}}


def first_examples(batches, n: int):
    """The first n (images, labels) of an iterable of batches, as one batch (fewer if short)."""
    xs, ys, have = [], [], 0
    for x, y in batches:
        xs.append(x)
        ys.append(y)
        have += int(tf.shape(y)[0])
        if have >= n:
            break
    return tf.concat(xs, 0)[:n], tf.concat(ys, 0)[:n]
