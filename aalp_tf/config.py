"""Frozen run configuration: what `cli.config_from_flags` builds once and everything below reads.

No absl here: code below the command line gets these objects, never FLAGS. A run folder keeps
its config as JSON (`config.json`), so a run can be resumed, evaluated or exported later with
exactly the settings it was trained with.

Every config checks its settings when it is constructed (`__post_init__`, with the rules of
rules.py), so no config out of range exists: the command line, a config.json read back and
`dataclasses.replace` are all refused in one line, "--epsilon must be in (0, 1] ...; received: 2.0".
"""
import dataclasses
import json
from typing import List, Optional

from aalp_tf import rules
from aalp_tf.errors import UsageError
# check, finite: re-exported, the commands and subpackages check their own inputs with them.
from aalp_tf.rules import (ALPHA, ATTACK_STEPS, EPSILON, INT32_MAX, KEEP_FRACTION,  # noqa: F401
                           MAX_LEARNING_RATE, MAX_LOSS_WEIGHT, MAX_TIMEOUT, SEED, STEP_SIZE,
                           TRADES_BETA, VAL_ATTACK_STEPS, Rule, check, check_range, finite,
                           integer, is_integer, number, one_of)

EXPORT_EPOCHS = ("best", "last")


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

    def __post_init__(self):
        for name in ("train_examples", "test_examples", "val_examples"):
            integer(name, 0, " (0 means all)").check(getattr(self, name))
        integer("batch_size", 1).check(self.batch_size)


@dataclasses.dataclass(frozen=True)
class AttackConfig:
    """The adversary of training and per-epoch validation, and the threat model of evaluations
    (pixel units of images in [0, 1])."""

    epsilon: float
    step_size: float
    steps: int
    random_start: bool = True
    # The threat model, attacks.THREAT_MODELS: "linf" (epsilon in (0, 1]) or "l2" (epsilon in
    # pixel units of the whole image, e.g. 2 on MNIST, 0.5 on CIFAR-10: (0, sqrt(H*W*C)]).
    norm: str = "linf"
    # Ramp epsilon and the step linearly from 0 over this many epochs (0: off, as in the paper).
    # Short MNIST runs at eps=0.3 can otherwise sit at chance accuracy for epochs.
    warmup_epochs: float = 0.0
    # The training adversary: "pgd" (PGD-k, the paper's), "fgsm_rs" or "n_fgsm" (one input
    # gradient per step; aalp_tf/adversaries.py). Validation always uses PGD.
    adversary: str = "pgd"

    def __post_init__(self):  # warmup_epochs: RunConfig checks it against the epochs
        rules.NORM.check(self.norm)
        rules.EPSILONS[self.norm].check(self.epsilon)
        rules.STEP_SIZES[self.norm].check(self.step_size)
        ATTACK_STEPS.check(self.steps)
        rules.ADVERSARY.check(self.adversary)
        # FGSM-RS and N-FGSM are sign steps with uniform L-inf noise: L-inf adversaries only.
        check(self.adversary == "pgd" or self.norm == "linf",
              f"--adversary={self.adversary} is an L-inf adversary; received: --norm={self.norm}; "
              "accepted: --adversary=pgd with --norm=l2")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The backbone and the Guided Dropout layer in front of the logits."""

    name: str
    width: int = 0  # base number of filters; 0 means the architecture's published width
    keep_fraction: float = 0.5
    gd_rescale: bool = False
    sync_batchnorm: bool = False  # batch statistics over all replicas (see README, Distributed)
    depth: int = 0  # wide_resnet's depth (0: the architecture's published value)
    widen_factor: int = 0  # wide_resnet's k (0: the architecture's published value)

    def __post_init__(self):
        KEEP_FRACTION.check(self.keep_fraction)
        for name in ("width", "depth", "widen_factor"):
            integer(name, 0, " (0: the architecture's default)").check(getattr(self, name))


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    """The training method and its weights."""

    name: str
    alpha: float = 1.0  # weight of the (adaptive) ALP term, Eq. 10
    trades_beta: float = 6.0
    guided_dropout: bool = False  # add Guided Dropout to any method (Table 3)

    def __post_init__(self):
        ALPHA.check(self.alpha)
        TRADES_BETA.check(self.trades_beta)


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
    analysis_probe: int = 0  # examples recorded per epoch into <model_dir>/analysis/ (0: off)
    strategy: str = "auto"  # default | mirrored | multi_worker | auto (see distribution.py)
    mixed_precision: bool = False  # mixed_float16 on GPUs; ignored on CPU
    # The epoch the run exports: "best" (highest val_robust_accuracy) or "last" (README).
    export_epoch: str = "best"
    # Adversarial weight perturbation (Wu et al. 2020; aalp_tf/awp.py): its size relative to
    # each weight tensor's norm, 5e-3 to 1e-2 in the paper (0: off).
    awp_gamma: float = 0.0
    # "constant", "cyclic" (one cycle, linear up then down) or "piecewise" (x0.1 at 50% and
    # 75% of the steps): aalp_tf/schedules.py.
    lr_schedule: str = "constant"

    def __post_init__(self):
        integer("epochs", 1).check(self.epochs)
        number("learning_rate", 0, MAX_LEARNING_RATE, open_low=True).check(self.learning_rate)
        integer("analysis_probe", 0, " (0: off)").check(self.analysis_probe)
        VAL_ATTACK_STEPS.check(self.val_attack_steps)
        integer("keep_checkpoints", 0, " (0: all)").check(self.keep_checkpoints)
        SEED.check(self.seed)
        one_of("export_epoch", EXPORT_EPOCHS).check(self.export_epoch)
        rules.AWP_GAMMA.check(self.awp_gamma)
        rules.LR_SCHEDULE.check(self.lr_schedule)
        # Keras silently compiles without XLA under op determinism: say so instead.
        check(not (self.jit_compile and self.deterministic),
              "--jit_compile needs --nodeterministic (Keras turns XLA off under deterministic "
              "ops); received: --jit_compile with --deterministic")


# config.json's format. A config.json of another format (or of none: written before formats)
# is refused, rather than read with guesses at what the code of its day did; bump it when a
# field is added, renamed or changes its meaning.
FORMAT = 1


class _Absent:
    def __repr__(self):
        return "absent"


ABSENT = _Absent()  # a leaf one side of `differences` lacks


def differences(old: dict, new: dict, *, may_change=(), prefix: str = "") -> List[str]:
    """`a.b: old -> new` for every leaf of two settings trees that differs (nested dicts as
    dotted names; a leaf one side lacks is `absent`), except the dotted names in `may_change`.
    The one comparison behind every "holds other settings" refusal (run folders, searches,
    studies)."""
    found = []
    for key in list(old) + [k for k in new if k not in old]:
        name = f"{prefix}{key}"
        if name in may_change:
            continue
        before, after = old.get(key, ABSENT), new.get(key, ABSENT)
        if isinstance(before, dict) and isinstance(after, dict):
            found += differences(before, after, may_change=may_change, prefix=f"{name}.")
        elif before != after:
            found.append(f"{name}: {before!r} -> {after!r}")
    return found


@dataclasses.dataclass(frozen=True)
class RunConfig:
    data: DataConfig
    model: ModelConfig
    method: MethodConfig
    attack: AttackConfig
    train: TrainConfig

    def __post_init__(self):
        epochs = self.train.epochs
        Rule("epsilon_warmup_epochs", f"in [0, --epochs={epochs}]",
             lambda v: finite(v) and 0 <= v <= epochs).check(self.attack.warmup_epochs)
        check_export_epoch(self)

    @property
    def export_name(self) -> str:
        """The model folder of the run's exports: --export_name, or <dataset>_<method>."""
        return self.train.export_name or f"{self.data.dataset}_{self.method.name}"

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **dataclasses.asdict(self)}, indent=2,
                          sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict) -> "RunConfig":
        """The config a config.json of this FORMAT describes; one of another format, or of
        none, is refused in one line that says what to do."""
        if raw.get("format") != FORMAT:
            raise UsageError(
                f"the config was written by another aalp_tf (format {raw.get('format', 'none')}"
                f", this one reads format {FORMAT}); accepted: a config of format {FORMAT}: "
                "train again into a new folder, or use the aalp_tf that wrote it")
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



def check_export_epoch(cfg: RunConfig) -> None:
    """--export_epoch is best or last, and best has a validation slice to choose by."""
    rule = cfg.train.export_epoch
    one_of("export_epoch", EXPORT_EPOCHS).check(rule)
    check(rule != "best" or cfg.data.val_examples > 0,
          "--export_epoch=best picks the epoch by val_robust_accuracy, which needs a validation "
          f"slice; received: --val_examples={cfg.data.val_examples}; accepted: --val_examples > 0, "
          "or --export_epoch=last")




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
      checks: run the sanity checks against false robustness (aalp_tf.evaluation.checks) and report them.
      check_examples: the checks' slice: the first this many test examples.
      images, labels: .npy files of the user's own test data, instead of data.dataset.
      data_file: an .npz file with `images` and `labels`, instead of data.dataset.
      input_key, output_key: the SavedModel signature's image input and logits output (None:
        inferred, evaluation.loading).
      save_adversarial: .npz path for the adversarial images, per-example correctness and
        labels (None: not written).
    """

    model: str
    data: DataConfig
    attack: AttackConfig
    attacks: tuple = ("clean",)
    restarts: int = 1
    seed: int = 0
    output: Optional[str] = None
    checks: bool = True
    check_examples: int = 100
    images: Optional[str] = None
    labels: Optional[str] = None
    data_file: Optional[str] = None
    input_key: Optional[str] = None
    output_key: Optional[str] = None
    save_adversarial: Optional[str] = None

    def __post_init__(self):
        check(bool(self.images) == bool(self.labels), "--images and --labels go together: "
              f"received --images={self.images} --labels={self.labels}")
        check(not (self.images and self.data_file), "--images/--labels and --data are two ways "
              "to give the same data; accepted: one of them")
        check(bool(self.data.dataset) or bool(self.images or self.data_file), "--dataset is "
              "not set; accepted: --dataset, --images with --labels, or --data=FILE.npz")
        integer("restarts", 1).check(self.restarts)
        SEED.check(self.seed)
        check(len(self.attacks) > 0, "--attacks is empty: name at least one, e.g. clean,pgd40")
        integer("check_examples", 1).check(self.check_examples)
