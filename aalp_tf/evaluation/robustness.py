"""The evaluation `python -m aalp_tf.evaluate` runs, as one function other code can call.

`evaluate(model, batches, attacks=...)` first refuses a model whose every output is NaN or inf,
runs the sanity checks against false robustness on the first `check_examples` images, then every
attack on every batch, and returns the record
the `evaluate` command writes as JSON. It prints only when `verbose`.
"""
from typing import Callable, Iterable, Sequence

from aalp_tf.evaluation import checks as sanity
from aalp_tf.evaluation import suite


def run_checks(logits_fn: Callable, batches: Iterable, *, epsilon: float, seed: int,
               examples: int, verbose: bool) -> dict:
    """The sanity checks on the first `examples` images, as the JSON record keeps them."""
    x, y = sanity.first_examples(batches, examples)
    results = sanity.run_checks(logits_fn, x, y, epsilon=epsilon, seed=seed)
    if verbose:
        print(f"sanity checks on the first {x.shape[0]} test images:")
        print("\n".join(sanity.report_lines(results)))
    return sanity.as_record(results, examples=int(x.shape[0]))


def evaluate(logits_fn: Callable, batches: Iterable, *, attacks: Sequence[str],
             image_shape: Sequence[int], epsilon: float, step_size: float, restarts: int = 1,
             seed: int = 0, checks: bool = True, check_examples: int = 100,
             num_batches: int = None, verbose: bool = False) -> dict:
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

    Returns:
      {"examples", "epsilon", "step_size", "restarts", "seed", "accuracy": {attack: [0, 1]}},
      and "checks" ({"examples", "failed", "results"}) when they ran.
    """
    for name in attacks:
        suite.parse_attack(name)  # a bad name fails before any work
    sanity.require_finite_outputs(logits_fn, sanity.first_examples(batches, check_examples)[0])
    record = {}
    if checks:
        record["checks"] = run_checks(logits_fn, batches, epsilon=epsilon, seed=seed,
                                      examples=check_examples, verbose=verbose)
    accuracy, count = suite.evaluate(
        logits_fn, batches, attacks, image_shape=image_shape, epsilon=epsilon,
        step_size=step_size, restarts=restarts, seed=seed, num_batches=num_batches,
        verbose=int(verbose))
    record.update(examples=count, epsilon=epsilon, step_size=step_size, restarts=restarts,
                  seed=seed, accuracy=accuracy)
    return record
