"""The evaluation `python -m aalp_tf.evaluate` runs, as one function other code can call.

`evaluate(logits_fn, batches, attacks=...)` first refuses a model whose every output is NaN or
inf, runs the sanity checks against false robustness on the first `check_examples` images, then
every attack on every batch, and returns the record the `evaluate` command writes as JSON. It
prints only when `verbose`. `evaluate_model` is the same for a Keras model, any function
returning logits, or a SavedModel folder, on a dataset, NumPy arrays or a list of batches: the
library's `aalp_tf.evaluate`.
"""
import math
import os
import warnings
from typing import Callable, Iterable, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from aalp_tf import paper
from aalp_tf.errors import UsageError, invalid_argument
from aalp_tf.evaluation import checks as sanity
from aalp_tf.evaluation import suite
from aalp_tf.evaluation.loading import keras_logits, load_logits


def run_checks(logits_fn: Callable, batches: Iterable, *, epsilon: float, seed: int,
               examples: int, verbose: bool, norm: str = "linf") -> dict:
    """The sanity checks on the first `examples` images, as the JSON record keeps them."""
    x, y = sanity.first_examples(batches, examples)
    results = sanity.run_checks(logits_fn, x, y, epsilon=epsilon, seed=seed, norm=norm)
    if verbose:
        print(f"sanity checks on the first {x.shape[0]} test images:")
        print("\n".join(sanity.report_lines(results)))
    return sanity.as_record(results, examples=int(x.shape[0]))


def evaluate(logits_fn: Callable, batches: Iterable, *, attacks: Sequence[str],
             image_shape: Sequence[int], epsilon: float, step_size: float, restarts: int = 1,
             seed: int = 0, checks: bool = True, check_examples: int = 100,
             num_batches: int = None, verbose: bool = False, norm: str = "linf",
             per_example: Optional[dict] = None, keep_adversarial: bool = False) -> dict:
    """Accuracy under each attack, with the sanity checks beside it.

    Args:
      logits_fn: images in [0, 1] -> logits, the model in inference mode.
      batches: re-iterable (images, integer labels) batches, e.g. a tf.data.Dataset.
      attacks: names such as clean, pgd40, autoattack1000 (evaluation.suite.parse_attack).
      image_shape: (H, W, C) of the images.
      epsilon, step_size: the L-inf radius and the PGD/CW step, in pixel units of [0, 1].
      restarts, seed: random restarts of each attack, and the seed of their random starts.
      checks: run the sanity checks first.
      check_examples: the checks' slice: the first this many images.
      num_batches: for the progress display.
      verbose: print the checks and the progress.
      norm: the threat model, "linf" or "l2"; epsilon is its radius.
      per_example, keep_adversarial: filled as suite.evaluate fills them (labels, each
        example's correctness under each attack, and the adversarial images).

    Returns:
      {"examples", "norm", "epsilon", "step_size", "restarts", "seed", "accuracy": {attack:
      [0, 1]}, "attacks_run": {attack: what it ran, in words}}, and "checks" ({"examples",
      "failed", "results"}) when they ran.
    """
    for name in attacks:
        suite.parse_attack(name)  # a bad name fails before any work
    short = suite.short_of_the_edge(attacks, epsilon=epsilon, step_size=step_size)
    if short:
        if verbose:
            print("\n".join(f"WARNING: {line}" for line in short))
    first = sanity.first_examples(batches, check_examples)[0]
    sanity.require_images_in_range(first)
    sanity.require_finite_outputs(logits_fn, first)
    record = {"warnings": short} if short else {}
    if checks:
        record["checks"] = run_checks(logits_fn, batches, epsilon=epsilon, seed=seed,
                                      examples=check_examples, verbose=verbose, norm=norm)
    accuracy, count = suite.evaluate(
        logits_fn, batches, attacks, image_shape=image_shape, epsilon=epsilon,
        step_size=step_size, restarts=restarts, seed=seed, num_batches=num_batches,
        verbose=int(verbose), norm=norm, per_example=per_example,
        keep_adversarial=keep_adversarial)
    record.update(examples=count, norm=norm, epsilon=epsilon, step_size=step_size,
                  restarts=restarts, seed=seed, accuracy=accuracy,
                  attacks_run={name: suite.describe(suite.parse_attack(name), restarts=restarts)
                               for name in attacks})
    return record


def _logits_function(model, *, input_key=None, output_key=None):
    """(images -> logits, the image shape it demands or None) of a model, callable or path."""
    if isinstance(model, (str, os.PathLike)):
        try:
            return load_logits(os.fspath(model), name="model", input_key=input_key,
                               output_key=output_key)
        except UsageError as err:  # the library's ValueError form, naming the argument
            raise invalid_argument("model", "a SavedModel folder, a .keras file, a keras.Model "
                                   "or a callable images -> logits", str(err)) from None
    if isinstance(model, keras.Model):
        return keras_logits(model)
    if callable(model):
        return model, None
    raise invalid_argument("model", "a keras.Model returning logits, a callable images -> "
                           "logits, a SavedModel folder or a .keras file",
                           f"model of type {type(model).__name__}")


def _batches(data, batch_size: int):
    """(re-iterable batches of (float images, labels), their number or None) of `data`."""
    if isinstance(data, tuple) and len(data) == 2:
        images, labels = data
        if np.ndim(images) != 4:
            raise invalid_argument("data", "images of shape [N, H, W, C]",
                                   f"images of shape {np.shape(images)}")
        if np.ndim(labels) != 1 or len(labels) != len(images):
            raise invalid_argument("data", f"integer labels of shape [{len(images)}], one per "
                                   "image (one-hot labels: pass labels.argmax(-1))",
                                   f"labels of shape {list(np.shape(labels))}")
        count = math.ceil(len(labels) / batch_size)
        return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size), count
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        if not isinstance(spec, tuple) or len(spec) != 2:
            raise invalid_argument("data", "(images, labels) elements", f"elements {spec}")
        if spec[0].shape.rank == 3:  # single images [H, W, C]: batch them
            data = data.batch(batch_size)
        count = int(data.cardinality())
        return data, (count if count >= 0 else None)
    if isinstance(data, list) and all(isinstance(b, (tuple, list)) and len(b) == 2 for b in data):
        return data, len(data)
    raise invalid_argument("data", "a tf.data.Dataset of (images, labels), a tuple (images, "
                           "labels) of arrays, or a list of (images, labels) batches",
                           f"data of type {type(data).__name__}")


def _as_float32(batches):
    """The attacks take float32 images: NumPy's x / 255 is float64."""
    if isinstance(batches, tf.data.Dataset):
        return batches.map(lambda x, y: (tf.cast(x, tf.float32), y))
    return [(tf.cast(x, tf.float32), y) for x, y in batches]


def check_labels(logits_fn, images, labels, *, name: str = "data") -> None:
    """Refuses, in one line, labels that are one-hot or name a class the model has no logit
    for (a 5-logit model on 10-class labels would otherwise score only the classes it has)."""
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank != 1 or labels.dtype.is_floating:
        raise invalid_argument(name, "integer labels [N] (one-hot labels: pass "
                               "labels.argmax(-1))", f"labels of shape {labels.shape.as_list()} "
                               f"and dtype {labels.dtype.name}")
    classes = int(logits_fn(tf.cast(images[:1], tf.float32)).shape[-1])
    largest = int(tf.reduce_max(labels)) if labels.shape[0] else 0
    if largest >= classes or (labels.shape[0] and int(tf.reduce_min(labels)) < 0):
        raise invalid_argument(name, f"labels in [0, {classes - 1}]: the model has {classes} "
                               "logits", f"labels up to {largest}")


def step_size_rule(*, epsilon: float, step_size: Optional[float], dataset: Optional[str],
                   norm: str) -> float:
    """THE evaluation step, for the library and the command alike: the one given, else the
    paper's for the dataset (aalp_tf.paper), else epsilon / 4."""
    if step_size is not None:
        return float(step_size)
    paper_step = paper.paper_settings(dataset, norm).get("step_size") if dataset else None
    return float(paper_step) if paper_step is not None else float(epsilon) / 4


def evaluate_model(model, data, *, attacks: Sequence[str], epsilon: Optional[float] = None,
                   step_size: Optional[float] = None, dataset: Optional[str] = None,
                   restarts: int = 1, seed: int = 0, checks: bool = True,
                   check_examples: int = 100, batch_size: int = 128, verbose: bool = False,
                   norm: Optional[str] = None, input_key: Optional[str] = None,
                   output_key: Optional[str] = None, keep_adversarial: bool = True) -> dict:
    """`aalp_tf.evaluate_model`: accuracy under each attack, each example's correctness and the
    adversarial examples, with the sanity checks beside them, as `python -m aalp_tf.evaluate`
    computes them.

    Args:
      model: a keras.Model returning logits (an AdversarialModel or any other), a callable
        images -> logits, a .keras file, or a SavedModel folder whose serving_default maps one
        image input to one logits output (ours, `images` -> `logits`; a Keras
        `model.export(path)`; any other with `input_key`/`output_key`).
      data: (images, integer labels) with float images [N, H, W, C] in [0, 1] (uint8 images are
        refused: divide by 255): a tf.data.Dataset (of batches, or of single images, then
        batched by `batch_size`), a tuple of NumPy arrays (batched by `batch_size`), or a list
        of batches.
      attacks: names such as clean, fgsm, pgd40, cw20, apgd-ce, apgd-t, square1000, autoattack.
      epsilon: the radius in pixel units; default: the paper's for `dataset`, else an
        AdversarialModel's own training epsilon, else required.
      step_size: the PGD/CW step; default (the command's rule too): the paper's for `dataset`,
        else epsilon / 4. A warning is printed and recorded when steps x step < epsilon.
      dataset: a dataset name (mnist, svhn, cifar10) whose paper settings fill in the above.
      restarts, seed: random restarts of each attack and the seed of their random starts.
      checks: run the sanity checks against false robustness first.
      check_examples: the checks' slice: the first this many images.
      batch_size: the batch of arrays (the command's --batch_size: same batches, same numbers).
      verbose: print the checks and the progress (nothing is printed otherwise).
      norm: the threat model, "linf" or "l2"; default: an AdversarialModel's own, else "linf".
      input_key, output_key: a SavedModel signature's image input and logits output, when it
        has more than one of either.
      keep_adversarial: return each attack's adversarial images (memory: N images per attack).

    Returns:
      {"examples", "epsilon", "step_size", "restarts", "seed", "accuracy": {attack: [0, 1]},
      "attacks_run", "labels": [N], "correct": {attack: [N] bool}, "adversarial": {attack:
      [N, H, W, C]} (with keep_adversarial)}, "checks" when they ran and "warnings" when an
      attack cannot reach epsilon.
    """
    for name in attacks:
        suite.parse_attack(name)  # a bad name fails before any work
    # An AdversarialModel brings its training adversary (read by name: evaluation reads
    # models, it does not import the trainer that makes them).
    own = getattr(model, "attack_config", None) if isinstance(model, keras.Model) else None
    norm = norm or (own.norm if own else "linf")
    paper_epsilon = paper.paper_settings(dataset, norm).get("epsilon") if dataset else None
    epsilon = epsilon if epsilon is not None else paper_epsilon
    epsilon = own.epsilon if epsilon is None and own else epsilon
    if epsilon is None:
        raise invalid_argument("epsilon", "a float in (0, 1] (pixel units): only a `dataset` "
                               "with paper settings or an AdversarialModel brings its own",
                               "epsilon=None")
    step_size = step_size_rule(epsilon=epsilon, step_size=step_size, dataset=dataset, norm=norm)
    logits_fn, wanted_shape = _logits_function(model, input_key=input_key,
                                               output_key=output_key)
    batches, count = _batches(data, batch_size)
    images, labels = next(iter(batches))
    images = tf.convert_to_tensor(images)
    if not images.dtype.is_floating:
        raise invalid_argument("data", "float images in [0, 1] (divide uint8 pixels by 255)",
                               f"images of dtype {images.dtype.name}")
    batches = _as_float32(batches)
    image_shape = tuple(images.shape[1:])
    if wanted_shape is not None and tuple(wanted_shape) != image_shape:
        raise invalid_argument("data", f"images of shape [N, {', '.join(map(str, wanted_shape))}]"
                               " (the model's)", f"images of shape {list(images.shape)}")
    check_labels(logits_fn, images, labels)
    per_example = {}
    record = evaluate(logits_fn, batches, attacks=attacks, image_shape=image_shape,
                      epsilon=float(epsilon), step_size=step_size, restarts=restarts,
                      seed=seed, checks=checks, check_examples=check_examples,
                      num_batches=count, verbose=verbose, norm=norm, per_example=per_example,
                      keep_adversarial=keep_adversarial)
    for line in record.get("warnings", []):
        warnings.warn(line, stacklevel=2)
    return {**record, **per_example}


def attack(model, images, labels, *, name: str, epsilon: float,
           step_size: Optional[float] = None, norm: str = "linf", restarts: int = 1,
           seed: int = 0, input_key: Optional[str] = None,
           output_key: Optional[str] = None) -> np.ndarray:
    """`aalp_tf.attack`: one attack of the suite on a batch, the adversarial images back (as
    ART's `generate`): any name `evaluate_model` takes (fgsm, pgd40, cw20, apgd-ce, square1000,
    autoattack, ...), the same seeds per example, the same step rule.

        >>> import keras, numpy as np, aalp_tf
        >>> model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
        ...                           keras.layers.Dense(3)])
        >>> x = np.random.default_rng(0).uniform(size=(2, 4, 4, 1)).astype("float32")
        >>> adversarial = aalp_tf.attack(model, x, np.array([0, 1]), name="pgd10",
        ...                              epsilon=0.1)
        >>> adversarial.shape, bool(np.abs(adversarial - x).max() <= 0.1 + 1e-6)
        ((2, 4, 4, 1), True)

    Args:
      model: as evaluate_model's (a Keras model, a callable, a SavedModel folder, .keras file).
      images, labels: float images [N, H, W, C] in [0, 1] and integer labels [N].
      name, epsilon, step_size, norm, restarts, seed: the attack (step: given, else epsilon/4).
    """
    spec = suite.parse_attack(name)
    logits_fn, _ = _logits_function(model, input_key=input_key, output_key=output_key)
    images = tf.convert_to_tensor(images, tf.float32)
    check_labels(logits_fn, images, labels, name="labels")
    step = step_size_rule(epsilon=epsilon, step_size=step_size, dataset=None, norm=norm)
    fn = suite.attack_function(spec, logits_fn, image_shape=tuple(images.shape[1:]),
                               epsilon=float(epsilon), step_size=step, restarts=restarts,
                               seed=seed, norm=norm)
    index = tf.range(int(images.shape[0]), dtype=tf.int64)
    return np.asarray(fn(images, tf.cast(labels, tf.int64), index))
