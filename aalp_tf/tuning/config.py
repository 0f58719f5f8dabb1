"""The search's frozen config and its checks (no TensorFlow, no absl): what
`cli.tune_config_from_flags` builds once and the tuners read. Beside the tuning it configures,
as comparison/config.py is beside the comparison."""
import dataclasses
from typing import Optional

from aalp_tf.config import RunConfig
from aalp_tf.rules import MAX_LEARNING_RATE, MAX_LOSS_WEIGHT, check, check_range, integer


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    """A KerasTuner search over runs like `run` (see aalp_tf/tuning/tuners.py).

    Attributes:
      run: the base run; each trial is this run with the searched values put in. Its
        train.model_dir is the search folder (the tuner's folder and every trial's run folder
        live under it).
      tuner: random, bayesian or hyperband (aalp_tf.tuning.tuners.TUNERS).
      objective: robust or tradeoff (aalp_tf.tuning.search_space.OBJECTIVES), on the validation slice.
      max_trials: trials of random and bayesian search; Hyperband's count follows from
        run.train.epochs (its max_epochs) and hyperband_factor.
      alpha_range: (low, high) of α, sampled log-uniformly.
      learning_rate_range: (low, high), log-uniform; None keeps run.train.learning_rate.
      keep_fraction_range: (low, high), uniform; None keeps run.model.keep_fraction.
      hyperband_factor: Hyperband's reduction factor.
      export_best: when the search ends, export the best trial's model (reloaded from its run
        folder, or retrained where that folder is not on this host).
    """

    run: RunConfig
    tuner: str = "random"
    objective: str = "robust"
    max_trials: int = 10
    alpha_range: tuple = (0.1, 10.0)
    learning_rate_range: Optional[tuple] = None
    keep_fraction_range: Optional[tuple] = None
    hyperband_factor: int = 3
    export_best: bool = True

    def __post_init__(self):  # `run` was checked when it was constructed
        integer("max_trials", 1).check(self.max_trials)
        integer("hyperband_factor", 2).check(self.hyperband_factor)
        check(self.run.data.val_examples > 0, "--val_examples must be > 0 to tune: the objective "
              f"is measured on the validation slice; received: {self.run.data.val_examples}")
        check_range("alpha_range", self.alpha_range, top=("--alpha", MAX_LOSS_WEIGHT))
        if self.learning_rate_range is not None:
            check_range("learning_rate_range", self.learning_rate_range,
                         top=("--learning_rate", MAX_LEARNING_RATE))
        if self.keep_fraction_range is not None:
            check_range("keep_fraction_range", self.keep_fraction_range, high_max=1.0)
