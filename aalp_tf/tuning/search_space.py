"""What a search varies and how it scores a trial: the space, the objectives, the tuner kinds.

No KerasTuner import here (it costs a second): the objectives and the space are plain Python, and
the tuner kinds live with the tuner classes in tuners.py.

The space (each a KerasTuner hyperparameter named as the config field it sets):
- `alpha` (always): log-uniform over `--alpha_range`, default 0.1..10. α multiplies a squared
  logit distance whose scale changes by orders of magnitude across models and datasets, so
  equal steps in log α are the natural grid; the range spans two decades around the paper's
  choice α = 1.0 (SVHN, Fig. 6): at 0.1 the pairing term is a small correction to the mixed
  clean/adversarial cross-entropy, at 10 it dominates it, the regime where Fig. 6 shows clean
  accuracy paying for robustness.
- `learning_rate` (`--tune_learning_rate`): log-uniform over `--learning_rate_range`, default
  1e-5..1e-3, around the paper's Adam rates (1e-4 on MNIST and SVHN, 1e-5 on CIFAR-10).
- `keep_fraction` (`--tune_keep_fraction`, Guided Dropout methods only): uniform over
  `--keep_fraction_range`, default 0.25..0.75, around the paper's median rule (0.5).
"""
import dataclasses
import statistics
from typing import Callable, Optional

from aalp_tf.config import RunConfig, check
from aalp_tf.tuning.config import TuneConfig
from aalp_tf.methods import METHODS
from aalp_tf.registry import Registry

ALPHA, LEARNING_RATE, KEEP_FRACTION = "alpha", "learning_rate", "keep_fraction"
HYPERBAND_EPOCHS = "tuner/epochs"  # what Hyperband puts in a trial's values: its epoch budget


@dataclasses.dataclass(frozen=True)
class Objective:
    """What KerasTuner maximises.

    Attributes:
      metric: the name trials are ranked by (a key of the metrics a trial reports).
      value: the logs of the epoch a trial exports (--export_epoch) -> the objective.
    """

    metric: str
    value: Callable[[dict], float]


OBJECTIVES: Registry[Objective] = Registry("objective")
OBJECTIVES.add("robust", Objective(
    "val_robust_accuracy", lambda logs: float(logs["val_robust_accuracy"])))
# The trade-off Fig. 6 shows, as one number without a weight to pick: unlike clean + λ·robust,
# the harmonic mean 2·c·r / (c + r) cannot be carried by one accuracy while the other collapses
# (it is 0 when either is).
OBJECTIVES.add("tradeoff", Objective("val_tradeoff", lambda logs: float(statistics.harmonic_mean(
    [float(logs["val_clean_accuracy"]), float(logs["val_robust_accuracy"])]))))


def _within(value: float, bounds) -> float:
    return min(max(value, bounds[0]), bounds[1])


def declare(hp, cfg: TuneConfig) -> dict:
    """Declares the space on a KerasTuner `HyperParameters`; returns this trial's values.

    A default is the base run's value (clipped into its range): Bayesian optimisation and
    a search's declaration start from it.
    """
    base = cfg.run
    values = {ALPHA: hp.Float(ALPHA, *cfg.alpha_range, sampling="log",
                              default=_within(base.method.alpha, cfg.alpha_range))}
    if cfg.learning_rate_range:
        values[LEARNING_RATE] = hp.Float(
            LEARNING_RATE, *cfg.learning_rate_range, sampling="log",
            default=_within(base.train.learning_rate, cfg.learning_rate_range))
    if cfg.keep_fraction_range:
        values[KEEP_FRACTION] = hp.Float(
            KEEP_FRACTION, *cfg.keep_fraction_range,
            default=_within(base.model.keep_fraction, cfg.keep_fraction_range))
    return values


def trial_values(cfg: TuneConfig, values: dict) -> dict:
    """A trial's alpha, learning_rate, keep_fraction and epochs (the base run's if not searched).

    Unknown keys of `values` (Hyperband's bookkeeping) are ignored but its epoch budget.
    """
    base = cfg.run
    return {ALPHA: values[ALPHA],
            LEARNING_RATE: values.get(LEARNING_RATE, base.train.learning_rate),
            KEEP_FRACTION: values.get(KEEP_FRACTION, base.model.keep_fraction),
            "epochs": int(values.get(HYPERBAND_EPOCHS, base.train.epochs))}


def trial_config(cfg: TuneConfig, values: dict, *, model_dir: Optional[str] = None
                 ) -> RunConfig:
    """The run a trial trains: the base run with the trial's values put in (refused in one line,
    as every config is, when a value is out of range).

    Args:
      cfg: the search.
      values: a trial's hyperparameter values.
      model_dir: the trial's run folder (None: the base run's, enough to build the model).
    """
    base, chosen = cfg.run, trial_values(cfg, values)
    method = dataclasses.replace(base.method, alpha=chosen[ALPHA])
    model = dataclasses.replace(base.model, keep_fraction=chosen[KEEP_FRACTION])
    train = dataclasses.replace(base.train, learning_rate=chosen[LEARNING_RATE],
                                epochs=chosen["epochs"],
                                model_dir=model_dir or base.train.model_dir)
    return base.replace(method=method, model=model, train=train)


def check_searchable(cfg: TuneConfig) -> None:
    """Refuses a search whose values would not change the training (one line, exit 2)."""
    method = METHODS.get(cfg.run.method.name)
    weighted = sorted(name for name in METHODS.names() if METHODS.get(name).uses_alpha)
    check(method.uses_alpha, f"--method={cfg.run.method.name} has no α to tune; accepted: "
          f"{', '.join(weighted)}")
    if cfg.keep_fraction_range:
        check(method.guided_dropout or cfg.run.method.guided_dropout,
              f"--tune_keep_fraction needs Guided Dropout, which --method="
              f"{cfg.run.method.name} does not use; accepted: aalp, aalp_gd, or "
              "--guided_dropout")
