"""Frozen run configuration: what `cli_flags.config_from_flags` builds once and everything below reads.

No absl here: code below the command line gets these objects, never FLAGS. A run folder keeps
its config as JSON (`config.json`), so a run can be resumed, evaluated or exported later with
exactly the settings it was trained with.
"""
import dataclasses
import json
from typing import Optional

from aalp_tf.errors import UsageError


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which data, from where, and how much of it.

    Attributes:
      dataset: registry name (mnist, svhn, cifar10).
      source_dir: folder with the original distribution files; None reads TFDS.
      data_dir: TFDS data_dir (None: TFDS' default).
      train_examples: use this prefix of the training split (0: all of it after the validation slice).
      test_examples: use this prefix of the test split (0: all).
      val_examples: held out of the *end* of the training split for per-epoch validation.
      augment: None uses the dataset's convention (crop+flip for CIFAR-10, nothing for digits).
      batch_size: the global batch (split across replicas under a distribution strategy).
    """

    dataset: str
    source_dir: Optional[str] = None
    data_dir: Optional[str] = None
    train_examples: int = 0
    test_examples: int = 0
    val_examples: int = 1000
    augment: Optional[bool] = None
    batch_size: int = 128


@dataclasses.dataclass(frozen=True)
class AttackConfig:
    """The L-inf PGD adversary used in training and per-epoch validation (pixel units in [0, 1])."""

    epsilon: float
    step_size: float
    steps: int
    random_start: bool = True


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The backbone and the Guided Dropout layer in front of the logits."""

    name: str
    width: int = 0  # base number of filters; 0 means the architecture's published width
    keep_fraction: float = 0.5
    gd_rescale: bool = False


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    """The training method and its weights."""

    name: str
    alpha: float = 1.0  # weight of the (adaptive) ALP term, Eq. 10
    trades_beta: float = 6.0
    guided_dropout: bool = False  # add Guided Dropout to any method (Table 3)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation and run-folder settings."""

    epochs: int
    learning_rate: float
    model_dir: str
    seed: int = 0
    deterministic: bool = True
    jit_compile: bool = False  # XLA is slower on CPU; see benchmarks/RESULTS.md
    val_attack_steps: int = 0  # 0: the training adversary's steps
    keep_checkpoints: int = 5  # 0 keeps every epoch's checkpoint
    export_dir: str = "saved_models"
    export_name: str = ""  # "" means <dataset>_<method>


@dataclasses.dataclass(frozen=True)
class RunConfig:
    data: DataConfig
    model: ModelConfig
    method: MethodConfig
    attack: AttackConfig
    train: TrainConfig

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict) -> "RunConfig":
        kinds = {"data": DataConfig, "model": ModelConfig, "method": MethodConfig,
                 "attack": AttackConfig, "train": TrainConfig}
        try:
            return cls(**{name: kinds[name](**raw[name]) for name in kinds})
        except (KeyError, TypeError) as err:
            raise UsageError(f"config is not an aalp_tf run config: {err}") from None

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        return cls.from_dict(json.loads(text))

    def replace(self, **parts) -> "RunConfig":
        return dataclasses.replace(self, **parts)


def check(condition: bool, message: str) -> None:
    """Raises UsageError(message) unless condition holds: for one-line input checks."""
    if not condition:
        raise UsageError(message)


def _validate_attack_and_data(a: AttackConfig, d: DataConfig) -> None:
    check(0.0 < a.epsilon <= 1.0,
          f"--epsilon must be in (0, 1] (pixel units, e.g. 0.3 or 8/255); received: {a.epsilon}")
    check(0.0 < a.step_size <= 1.0, f"--step_size must be in (0, 1]; received: {a.step_size}")
    check(d.batch_size >= 1, f"--batch_size must be >= 1; received: {d.batch_size}")
    for name in ("train_examples", "test_examples", "val_examples"):
        value = getattr(d, name)
        check(value >= 0, f"--{name} must be >= 0 (0 means all); received: {value}")


def validate(cfg: RunConfig) -> RunConfig:
    """Checks ranges a user can get wrong; returns cfg unchanged when it is sound."""
    a, t, m = cfg.attack, cfg.train, cfg.model
    _validate_attack_and_data(a, cfg.data)
    check(a.steps >= 1, f"--attack_steps must be >= 1; received: {a.steps}")
    check(t.epochs >= 1, f"--epochs must be >= 1; received: {t.epochs}")
    check(t.learning_rate > 0, f"--learning_rate must be > 0; received: {t.learning_rate}")
    check(0.0 < m.keep_fraction <= 1.0,
          f"--keep_fraction must be in (0, 1]; received: {m.keep_fraction}")
    check(m.width >= 0, f"--width must be >= 0 (0: the architecture's default); received: {m.width}")
    check(cfg.method.alpha >= 0, f"--alpha must be >= 0; received: {cfg.method.alpha}")
    check(cfg.method.trades_beta >= 0,
          f"--trades_beta must be >= 0; received: {cfg.method.trades_beta}")
    return cfg


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """What `evaluate` attacks, with what, on which data.

    Attributes:
      model: SavedModel folder, read through its serving_default signature only.
      data: the test data (train-side fields unused).
      attack: epsilon and PGD/CW step size (attack.steps unused: steps come from the names).
      attacks: names such as clean, fgsm, pgd40, cw20.
      restarts: random restarts of PGD and CW; per example the worst case counts.
      seed: seed of the random starts.
      output: JSON path ("" or None: evaluation/<name>-<version>.json).
    """

    model: str
    data: DataConfig
    attack: AttackConfig
    attacks: tuple = ("clean",)
    restarts: int = 1
    seed: int = 0
    output: Optional[str] = None


def validate_eval(cfg: EvalConfig) -> EvalConfig:
    """Checks ranges a user can get wrong; returns cfg unchanged when it is sound."""
    _validate_attack_and_data(cfg.attack, cfg.data)
    check(cfg.restarts >= 1, f"--restarts must be >= 1; received: {cfg.restarts}")
    check(len(cfg.attacks) > 0, "--attacks is empty: name at least one, e.g. clean,pgd40")
    return cfg
