"""Accuracy of a logits function under named attacks, as in the paper's Table 2.

Attack names are a family and an optional step count: `clean`, `fgsm`, `pgd40`, `cw20`,
`apgd-ce` (100 steps), `apgd-t50`, `fab-t`, `square1000` (queries), `autoattack` (the standard
version exactly, no count), `aa-lite1000` (a cheaper variant: no FAB-T, Square of 1000 queries).
Families live in a registry, so stronger attacks join by registering a builder with its
step-count rule; `describe` says in words what a name runs, for the report.

Randomness is per example: example i of the evaluation draws from the seed (seed, i), so a
figure does not depend on the batch size or on the other images of a batch.
"""
import dataclasses
import json
import os
import pathlib
import re
import sys
import time
from typing import Callable, Dict, Iterable, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from aalp_tf import attacks
from aalp_tf.evaluation import autoattack
from aalp_tf.errors import UsageError
from aalp_tf.files import write_atomically
from aalp_tf.registry import Registry
from aalp_tf.files import check_writable

# family -> builder(logits_fn, *, steps, epsilon, step_size, restarts, norm)
#   -> fn(x, y, seeds [N, 2]) -> x_adv
ATTACK_FAMILIES = Registry("attack")
# family -> REQUIRED (`pgd40`) or its default count (`apgd-ce` is apgd-ce100); absent: no count
STEP_RULES: Dict[str, int] = {}
REQUIRED = 0


def register_family(name: str, *, steps: Optional[int] = None):
    """Registers an attack builder; `steps`: None (the name takes no count), REQUIRED, or the
    count a bare name means."""

    def add(build):
        ATTACK_FAMILIES.add(name, build)
        if steps is not None:
            STEP_RULES[name] = steps
        return build

    return add


# old names kept with their old meaning: the MNIST study's committed settings name autoattack1000
ALIASES = {"autoattack1000": "aa-lite1000"}


@dataclasses.dataclass(frozen=True)
class AttackSpec:
    name: str
    family: str
    steps: int  # 0 for attacks without steps


@ATTACK_FAMILIES.register("clean")
def _clean(logits_fn, **_):
    return lambda x, y, seeds: x


@ATTACK_FAMILIES.register("fgsm")
def _fgsm(logits_fn, *, epsilon, norm, **_):
    return lambda x, y, seeds: attacks.fgsm(logits_fn, x, y, epsilon=epsilon, norm=norm)


@register_family("pgd", steps=REQUIRED)
def _pgd(logits_fn, *, steps, epsilon, step_size, restarts, norm):
    return lambda x, y, seeds: attacks.pgd(logits_fn, x, y, epsilon=epsilon,
                                           step_size=step_size, steps=steps, restarts=restarts,
                                           seed=seeds, keep_best=True, norm=norm)


@register_family("cw", steps=REQUIRED)
def _cw(logits_fn, *, steps, epsilon, step_size, restarts, norm):
    return lambda x, y, seeds: attacks.cw(logits_fn, x, y, epsilon=epsilon,
                                          step_size=step_size, steps=steps, restarts=restarts,
                                          seed=seeds, keep_best=True, norm=norm)


# ---- AutoAttack's attacks (aalp_tf.evaluation.autoattack); --restarts applies to each ----------
APGD_STEPS = 100  # AutoAttack's standard budget per run
FAB_STEPS = 100
SQUARE_QUERIES = 5000
LITE_QUERIES = 1000


@register_family("apgd-ce", steps=APGD_STEPS)
def _apgd_ce(logits_fn, *, steps, epsilon, restarts, norm, **_):
    return lambda x, y, seeds: autoattack.apgd_ce(logits_fn, x, y, epsilon=epsilon, steps=steps,
                                                  restarts=restarts, seed=seeds, norm=norm)


@register_family("apgd-t", steps=APGD_STEPS)
def _apgd_t(logits_fn, *, steps, epsilon, restarts, norm, **_):
    return lambda x, y, seeds: autoattack.apgd_t(logits_fn, x, y, epsilon=epsilon, steps=steps,
                                                 restarts=restarts, seed=seeds, norm=norm)


@register_family("fab-t", steps=FAB_STEPS)
def _fab_t(logits_fn, *, steps, epsilon, restarts, norm, **_):
    return lambda x, y, seeds: autoattack.fab_t(logits_fn, x, y, epsilon=epsilon, steps=steps,
                                                restarts=restarts, seed=seeds, norm=norm)


@register_family("square", steps=SQUARE_QUERIES)
def _square(logits_fn, *, steps, epsilon, restarts, norm, **_):
    return lambda x, y, seeds: autoattack.square(logits_fn, x, y, epsilon=epsilon,
                                                 queries=steps, restarts=restarts, seed=seeds,
                                                 norm=norm)


@ATTACK_FAMILIES.register("autoattack")  # the standard version: no count to change
def _autoattack(logits_fn, *, epsilon, restarts, norm, **_):
    return lambda x, y, seeds: autoattack.autoattack(
        logits_fn, x, y, epsilon=epsilon, steps=APGD_STEPS, fab_steps=FAB_STEPS,
        queries=SQUARE_QUERIES, restarts=restarts, seed=seeds, norm=norm)


@register_family("aa-lite", steps=LITE_QUERIES)  # the count is Square's queries
def _aa_lite(logits_fn, *, steps, epsilon, restarts, norm, **_):
    return lambda x, y, seeds: autoattack.autoattack(
        logits_fn, x, y, epsilon=epsilon, steps=APGD_STEPS, queries=steps, with_fab=False,
        rescale_schedule=True, restarts=restarts, seed=seeds, norm=norm)


def describe(spec: "AttackSpec", *, restarts: int = 1) -> str:
    """What an attack name runs, in words, for the report: which AutoAttack was run."""
    runs = f"{restarts} restart{'s' if restarts > 1 else ''}"
    known = {
        "clean": "no attack",
        "fgsm": "FGSM (one step of epsilon)",
        "pgd": f"PGD, {spec.steps} steps, {runs}, cross-entropy",
        "cw": f"PGD, {spec.steps} steps, {runs}, CW margin",
        "apgd-ce": f"APGD-CE, {spec.steps} steps, {runs}",
        "apgd-t": f"APGD-T, 9 targets, {spec.steps} steps, {runs}",
        "fab-t": f"FAB-T, 9 targets, {spec.steps} steps, {runs}",
        "square": f"Square, {spec.steps} queries, {runs}",
        "autoattack": f"standard AutoAttack: APGD-CE, APGD-T (9 targets), FAB-T (9 targets), "
                      f"Square (5000 queries), {runs} each"
                      + ("" if restarts == 1 else " (standard: 1 restart)"),
        "aa-lite": f"NOT standard AutoAttack: APGD-CE, APGD-T (9 targets), no FAB-T, Square "
                   f"({spec.steps} queries), {runs} each",
    }
    return known[spec.family]


def short_of_the_edge(names: Sequence[str], *, epsilon: float, step_size: float) -> list:
    """One line for each PGD/CW attack whose steps x step < epsilon: it cannot reach the ball's
    edge, so its accuracy overstates robustness (MNIST's step 0.01 with pgd10: 0.1 < 0.3)."""
    lines = []
    for name in names:
        spec = parse_attack(name)
        if spec.family in ("pgd", "cw") and spec.steps * step_size < epsilon * (1 - 1e-6):
            lines.append(f"{name}: {spec.steps} steps x step {step_size:.6g} = "
                         f"{spec.steps * step_size:.6g} < epsilon {epsilon:.6g}: it cannot reach "
                         f"the ball's edge; accepted: a step >= {epsilon / spec.steps:.6g} or "
                         "more steps")
    return lines


def parse_attack(name: str) -> AttackSpec:
    """`pgd40` -> AttackSpec("pgd40", "pgd", 40), `apgd-ce` -> ("apgd-ce", "apgd-ce", 100); one
    clear line for anything else."""
    text = name.strip().lower()
    if text in ALIASES:  # the old name stays the record's key; its meaning is the alias'
        alias = parse_attack(ALIASES[text])
        return AttackSpec(name=text, family=alias.family, steps=alias.steps)
    match = re.fullmatch(r"([a-z][a-z_\-]*?)(\d*)", text)
    family, digits = (match.group(1), match.group(2)) if match else (text, "")
    rule = STEP_RULES.get(family)  # None: the name carries no count
    count_ok = not digits if rule is None else bool(digits) or rule != REQUIRED
    if family not in ATTACK_FAMILIES or not count_ok or (digits and int(digits) < 1):
        known = ", ".join(_pattern(f) for f in ATTACK_FAMILIES.names())
        raise UsageError(f"unknown attack: received {name!r}; accepted: {known} "
                         "(k = steps, e.g. pgd40; Square's queries for square and aa-lite; "
                         "autoattack is the standard version and takes no count)")
    steps = int(digits) if digits else (0 if rule in (None, REQUIRED) else rule)
    return AttackSpec(name=text, family=family, steps=steps)


def _pattern(family: str) -> str:
    rule = STEP_RULES.get(family)
    return family if rule is None else f"{family}<k>" if rule == REQUIRED else f"{family}[<k>]"


def attack_function(spec: AttackSpec, logits_fn, *, image_shape: Sequence[int], epsilon: float,
                    step_size: float, restarts: int = 1, seed: int = 0,
                    norm: str = "linf") -> Callable:
    """A tf.function (x, y, index) -> adversarial x, traced once for any batch size; `index`
    [N] holds each example's position in the test set, which with `seed` fixes its random
    numbers whatever else is in the batch."""
    build = ATTACK_FAMILIES.get(spec.family)
    fn = build(logits_fn, steps=spec.steps, epsilon=epsilon, step_size=step_size,
               restarts=restarts, norm=norm)
    return tf.function(lambda x, y, index: fn(x, y, attacks.example_seeds(seed, index)),
                       input_signature=[tf.TensorSpec([None, *image_shape], tf.float32),
                                        tf.TensorSpec([None], tf.int64),
                                        tf.TensorSpec([None], tf.int64)])


class Progress:
    """The evaluation's progress: Keras' bar on a terminal; elsewhere (a log file, a pipe) one
    plain line per batch, where the bar's carriage returns and colour codes would pile up."""

    def __init__(self, num_batches: Optional[int], names: Sequence[str]):
        self.num_batches, self.done, self.start = num_batches, 0, time.time()
        self.bar = None
        if sys.stdout.isatty():  # stateful: the running accuracies as they are, not averaged
            self.bar = keras.utils.Progbar(num_batches, unit_name="batch", stateful_metrics=names)

    def batch_done(self, examples: int, accuracy: Dict[str, float]) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.add(1, values=list(accuracy.items())[:4])
            return
        shown = ", ".join(f"{name} {100 * value:.2f}%" for name, value in accuracy.items())
        print(f"batch {self.done}/{self.num_batches or '?'} ({examples} examples, "
              f"{time.time() - self.start:.0f} s): {shown}", flush=True)


def evaluate(logits_fn, batches: Iterable, attack_names: Sequence[str], *,
             image_shape: Sequence[int], epsilon: float, step_size: float, restarts: int = 1,
             seed: int = 0, num_batches: Optional[int] = None, verbose: int = 1,
             norm: str = "linf", per_example: Optional[dict] = None,
             keep_adversarial: bool = False) -> Tuple[Dict[str, float], int]:
    """Accuracy under each attack over every (images, labels) batch.

    Args:
      logits_fn: images -> logits (inference mode).
      batches: iterable of (float images in [0, 1], int labels).
      attack_names: e.g. ["clean", "fgsm", "pgd40"].
      num_batches: for the progress display.
      verbose: 1 shows the progress: a bar on a terminal, a line per batch elsewhere.
      norm: the threat model, "linf" or "l2" (attacks.THREAT_MODELS).
      per_example: a dict to fill, when given, with "labels" [N] and "correct" {attack: [N]
        bool}, each example's correctness under each attack (ART's and AutoAttack's per-example
        results), and with keep_adversarial also "adversarial" {attack: [N, H, W, C]}.

    Returns:
      ({attack name: accuracy in [0, 1]}, in the order given; the number of examples).
    """
    specs = [parse_attack(n) for n in attack_names]
    fns = [attack_function(s, logits_fn, image_shape=image_shape, epsilon=epsilon,
                           step_size=step_size, restarts=restarts, seed=seed, norm=norm)
           for s in specs]
    predict = tf.function(lambda x: tf.argmax(logits_fn(x), axis=-1, output_type=tf.int64))
    correct = {s.name: 0 for s in specs}
    total = 0
    progress = Progress(num_batches, [s.name for s in specs]) if verbose else None
    kept = {"labels": [], "correct": {s.name: [] for s in specs},
            "adversarial": {s.name: [] for s in specs}}
    for x, y in batches:
        y = tf.cast(y, tf.int64)
        index = tf.range(total, total + int(tf.shape(y)[0]), dtype=tf.int64)
        kept["labels"].append(y.numpy())
        for spec, fn in zip(specs, fns):
            adversarial = fn(x, y, index)
            hits = tf.equal(predict(adversarial), y)
            correct[spec.name] += int(tf.reduce_sum(tf.cast(hits, tf.int32)))
            if per_example is not None:
                kept["correct"][spec.name].append(hits.numpy())
                if keep_adversarial:
                    kept["adversarial"][spec.name].append(np.asarray(adversarial))
        total += int(tf.shape(y)[0])
        if progress is not None:
            progress.batch_done(total, {name: hits / total for name, hits in correct.items()})
    if total == 0:
        raise UsageError("no test examples to evaluate; accepted: --test_examples >= 1 or 0 "
                         "(all)")
    if per_example is not None:
        per_example["labels"] = np.concatenate(kept["labels"])
        per_example["correct"] = {k: np.concatenate(v) for k, v in kept["correct"].items()}
        if keep_adversarial:
            per_example["adversarial"] = {k: np.concatenate(v)
                                          for k, v in kept["adversarial"].items()}
    return {name: hits / total for name, hits in correct.items()}, total


def table_row(label: str, accuracy: Dict[str, float]) -> str:
    """A markdown header and row like the paper's Table 2."""
    names = list(accuracy)
    header = "| model | " + " | ".join(names) + " |"
    rule = "|" + "---|" * (len(names) + 1)
    row = f"| {label} | " + " | ".join(f"{100 * accuracy[n]:.2f}%" for n in names) + " |"
    return "\n".join([header, rule, row])


def default_output(model_path: str) -> pathlib.Path:
    """evaluation/<name>-<version>.json for a SavedModel folder <name>/<version>, and
    evaluation/<stem>.json for a .keras file."""
    path = pathlib.Path(model_path).resolve()
    if path.suffix == ".keras":
        return pathlib.Path("evaluation") / f"{path.stem}.json"
    return pathlib.Path("evaluation") / f"{path.parent.name}-{path.name}.json"


def check_output(path) -> None:
    """Refuses, in one line, a JSON path `write_json` could not write; checked before an
    evaluation that may take hours, not after it."""
    path = pathlib.Path(path)
    if path.is_dir():
        raise UsageError(f"--output_file {path} is a folder; accepted: a file path, e.g. "
                         f"{path / 'evaluation.json'}")
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"--output_file {path} is not writable (permission denied); accepted: a "
                         "file this user may write")
    check_writable(path.parent, flag="--output_file's folder")


def write_json(path, record: dict) -> pathlib.Path:
    path = pathlib.Path(path)
    write_atomically(path, json.dumps(record, indent=2) + "\n")  # a kill leaves no half file
    return path
