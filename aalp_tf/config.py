"""Frozen run configuration: what `cli.config_from_flags` builds once and everything below reads.

No absl here: code below the command line gets these objects, never FLAGS. A run folder keeps
its config as JSON (`config.json`), so a run can be resumed, evaluated or exported later with
exactly the settings it was trained with.
"""
import dataclasses
import json
import math
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
    # The threat model, attacks.THREAT_MODELS: "linf" (epsilon in (0, 1]) or "l2" (epsilon in
    # pixel units of the whole image, e.g. 2 on MNIST, 0.5 on CIFAR-10: (0, sqrt(H*W*C)]).
    norm: str = "linf"
    # Ramp epsilon and the step linearly from 0 over this many epochs (0: off, as in the paper).
    # Short MNIST runs at eps=0.3 can otherwise sit at chance accuracy for epochs.
    warmup_epochs: float = 0.0


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
    analysis_probe: int = 0  # examples recorded per epoch into <model_dir>/analysis/ (0: off)
    strategy: str = "auto"  # default | mirrored | multi_worker | auto (see distribution.py)
    mixed_precision: bool = False  # mixed_float16 on GPUs; ignored on CPU
    # The epoch the run exports: "best" (highest val_robust_accuracy) or "last" (README).
    export_epoch: str = "best"


# Fields added after run folders were first written, whose default differs from what the code
# before them did: a config.json without the field was made by that code.
OLDER_VALUES = {("train", "export_epoch"): "last"}  # every run exported its last epoch


def older_value(part: str, field: dataclasses.Field):
    """The value of `field` of config part `part` for a config written before it existed."""
    if (part, field.name) in OLDER_VALUES:
        return OLDER_VALUES[(part, field.name)]
    return field.default


@dataclasses.dataclass(frozen=True)
class RunConfig:
    data: DataConfig
    model: ModelConfig
    method: MethodConfig
    attack: AttackConfig
    train: TrainConfig

    @property
    def export_name(self) -> str:
        """The model folder of the run's exports: --export_name, or <dataset>_<method>."""
        return self.train.export_name or f"{self.data.dataset}_{self.method.name}"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict) -> "RunConfig":
        """The config a config.json describes; a field it lacks (it was written before the
        field existed) takes the value that reproduces what that code did (`older_value`)."""
        kinds = {"data": DataConfig, "model": ModelConfig, "method": MethodConfig,
                 "attack": AttackConfig, "train": TrainConfig}
        try:
            return cls(**{name: kinds[name](**{
                **{f.name: older_value(name, f) for f in dataclasses.fields(kinds[name])
                   if (name, f.name) in OLDER_VALUES}, **raw[name]}) for name in kinds})
        except (KeyError, TypeError) as err:
            raise UsageError(f"config is not an aalp_tf run config: {err}") from None

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        return cls.from_dict(json.loads(text))

    def replace(self, **parts) -> "RunConfig":
        return dataclasses.replace(self, **parts)


EXPORT_EPOCHS = ("best", "last")


def check(condition: bool, message: str) -> None:
    """Raises UsageError(message) unless condition holds: for one-line input checks."""
    if not condition:
        raise UsageError(message)


# Upper bounds of settings that have no natural one. absl's float flags accept `inf` and `nan`,
# and a finite but absurd value trains as badly: --alpha=1e30 turns the loss to NaN in the first
# epoch, as --alpha=inf does. Each bound sits far above any sensible value.
MAX_LOSS_WEIGHT = 1000.0  # --alpha, --trades_beta: 1000x the paper's α = 1, 100x the tuner's
#                           default range; at 1000 the cross-entropy is already ~1% of the loss
MAX_LEARNING_RATE = 1.0  # Adam moves every weight by about the rate at every step
MAX_TIMEOUT = 3600.0  # seconds a Predict request may wait
INT32_MAX = 2 ** 31 - 1  # counts and steps become int32 tensors; a run's seed numpy's uint32


def finite(value) -> bool:
    """A real number, not NaN or ±inf. (A range check alone lets NaN through wherever it is
    written as a negation, since every comparison with NaN is False.)"""
    return isinstance(value, (int, float)) and math.isfinite(value)


def _check_ints(cfg) -> None:
    """Every integer field of a config, nested ones too, fits in int32: absl's integer flags
    take any size, and a larger one would fail deep inside TensorFlow or numpy."""
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if dataclasses.is_dataclass(value):
            _check_ints(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            flag = "attack_steps" if isinstance(cfg, AttackConfig) else field.name
            check(abs(value) <= INT32_MAX,
                  f"--{flag} must be at most {INT32_MAX} in size; received: {value}")


def _validate_attack_and_data(a: AttackConfig, d: DataConfig) -> None:
    check(finite(a.epsilon) and 0.0 < a.epsilon <= 1.0,
          f"--epsilon must be in (0, 1] (pixel units, e.g. 0.3 or 8/255); received: {a.epsilon}")
    check(finite(a.step_size) and 0.0 < a.step_size <= 1.0,
          f"--step_size must be in (0, 1]; received: {a.step_size}")
    check(d.batch_size >= 1, f"--batch_size must be >= 1; received: {d.batch_size}")
    for name in ("train_examples", "test_examples", "val_examples"):
        value = getattr(d, name)
        check(value >= 0, f"--{name} must be >= 0 (0 means all); received: {value}")


def _validate_method(m: MethodConfig) -> None:
    for name in ("alpha", "trades_beta"):
        value = getattr(m, name)
        check(finite(value) and 0 <= value <= MAX_LOSS_WEIGHT,
              f"--{name} must be in [0, {MAX_LOSS_WEIGHT:g}]; received: {value}")


def check_export_epoch(cfg: RunConfig) -> None:
    """--export_epoch is best or last, and best has a validation slice to choose by."""
    rule = cfg.train.export_epoch
    check(rule in EXPORT_EPOCHS, f"--export_epoch must be one of {', '.join(EXPORT_EPOCHS)}; "
                                 f"received: {rule!r}")
    check(rule != "best" or cfg.data.val_examples > 0,
          "--export_epoch=best picks the epoch by val_robust_accuracy, which needs a validation "
          f"slice; received: --val_examples={cfg.data.val_examples}; accepted: --val_examples > 0, "
          "or --export_epoch=last")


def validate(cfg: RunConfig) -> RunConfig:
    """Checks ranges a user can get wrong; returns cfg unchanged when it is sound."""
    a, t, m = cfg.attack, cfg.train, cfg.model
    _check_ints(cfg)
    _validate_attack_and_data(a, cfg.data)
    check(a.steps >= 1, f"--attack_steps must be >= 1; received: {a.steps}")
    check(t.epochs >= 1, f"--epochs must be >= 1; received: {t.epochs}")
    check(finite(a.warmup_epochs) and 0 <= a.warmup_epochs <= t.epochs,
          f"--epsilon_warmup_epochs must be in [0, --epochs={t.epochs}]; received: "
          f"{a.warmup_epochs}")
    check(finite(t.learning_rate) and 0 < t.learning_rate <= MAX_LEARNING_RATE,
          f"--learning_rate must be in (0, {MAX_LEARNING_RATE:g}]; received: {t.learning_rate}")
    check(finite(m.keep_fraction) and 0.0 < m.keep_fraction <= 1.0,
          f"--keep_fraction must be in (0, 1]; received: {m.keep_fraction}")
    check(m.width >= 0, f"--width must be >= 0 (0: the architecture's default); received: {m.width}")
    check(t.analysis_probe >= 0,
          f"--analysis_probe must be >= 0 (0: off); received: {t.analysis_probe}")
    check(t.val_attack_steps >= 0, "--val_attack_steps must be >= 0 (0: --attack_steps); "
                                   f"received: {t.val_attack_steps}")
    check(t.keep_checkpoints >= 0,
          f"--keep_checkpoints must be >= 0 (0: all); received: {t.keep_checkpoints}")
    check(t.seed >= 0, f"--seed must be >= 0; received: {t.seed}")
    _validate_method(cfg.method)
    for name in ("depth", "widen_factor"):
        check(getattr(m, name) >= 0, f"--{name} must be >= 0 (0: the architecture's default); "
                                     f"received: {getattr(m, name)}")
    check_export_epoch(cfg)
    # Keras silently compiles without XLA under op determinism: say so instead.
    check(not (t.jit_compile and t.deterministic),
          "--jit_compile needs --nodeterministic (Keras turns XLA off under deterministic ops); "
          "received: --jit_compile with --deterministic")
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
      checks: run the sanity checks against false robustness (aalp_tf.evaluation.checks) and report them.
      check_examples: the checks' slice: the first this many test examples.
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


def validate_eval(cfg: EvalConfig) -> EvalConfig:
    """Checks ranges a user can get wrong; returns cfg unchanged when it is sound."""
    _check_ints(cfg)
    _validate_attack_and_data(cfg.attack, cfg.data)
    check(cfg.restarts >= 1, f"--restarts must be >= 1; received: {cfg.restarts}")
    check(len(cfg.attacks) > 0, "--attacks is empty: name at least one, e.g. clean,pgd40")
    check(cfg.check_examples >= 1,
          f"--check_examples must be >= 1; received: {cfg.check_examples}")
    return cfg


@dataclasses.dataclass(frozen=True)
class AnalysisConfig:
    """What `analyze` reads, computes and writes.

    Attributes:
      models: ((label, path), ...): run folders or SavedModel version folders.
      out: folder for the figures and tables.
      data: the test data (train-side fields unused).
      attack: the PGD adversary of the analyses (the dataset's paper settings by default).
      what: analysis names, or ("all",).
      cam_layer: backbone layer for Grad-CAM ("": the last spatial layer).
      cam_images: test images in the Grad-CAM figure.
      cam_source: "own" (each model's own adversarial examples of the same images) or a label
        from `models` (that model's adversarial examples, shown to every model).
      seed: seed of the PGD random starts.
    """

    models: tuple
    out: str
    data: DataConfig
    attack: AttackConfig
    what: tuple = ("all",)
    cam_layer: str = ""
    cam_images: int = 8
    cam_source: str = "own"
    seed: int = 0


def validate_analysis(cfg: AnalysisConfig) -> AnalysisConfig:
    """Checks ranges a user can get wrong; returns cfg unchanged when it is sound."""
    _check_ints(cfg)
    _validate_attack_and_data(cfg.attack, cfg.data)
    labels = [label for label, _ in cfg.models]
    check(len(labels) > 0, "--models is empty; accepted: label:path pairs, e.g. "
                           "natural:runs/mnist_natural,aalp:saved_models/mnist_aalp/1")
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    check(not repeated, f"--models names {', '.join(repeated)} more than once; accepted: "
                        "distinct labels")
    check(cfg.attack.steps >= 1, f"--attack_steps must be >= 1; received: {cfg.attack.steps}")
    check(1 <= cfg.cam_images <= 32, f"--cam_images must be in 1..32; received: {cfg.cam_images}")
    check(cfg.cam_source in ["own"] + labels, f"--cam_source={cfg.cam_source} is not a model "
                                              f"label; accepted: own, {', '.join(labels)}")
    return cfg


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


def _check_range(name: str, bounds, *, high_max: Optional[float] = None, top=None) -> None:
    """LOW,HIGH with 0 < LOW < HIGH (<= high_max); `top`: (flag, bound) HIGH may not exceed,
    the bound of the flag the range searches."""
    check(bounds is not None and len(bounds) == 2 and 0 < bounds[0] < bounds[1]
          and (high_max is None or bounds[1] <= high_max),
          f"--{name} must be LOW,HIGH with 0 < LOW < HIGH"
          f"{'' if high_max is None else f' <= {high_max}'}; received: {bounds}")
    if top is not None:
        flag, bound = top
        check(finite(bounds[1]) and bounds[1] <= bound, f"--{name}'s HIGH must be at most "
              f"{bound:g}, the largest {flag}; received: {bounds}")


def validate_tune(cfg: TuneConfig) -> TuneConfig:
    """Checks ranges a user can get wrong; returns cfg unchanged when it is sound."""
    validate(cfg.run)
    _check_ints(cfg)
    check(cfg.max_trials >= 1, f"--max_trials must be >= 1; received: {cfg.max_trials}")
    check(cfg.hyperband_factor >= 2,
          f"--hyperband_factor must be >= 2; received: {cfg.hyperband_factor}")
    check(cfg.run.data.val_examples > 0, "--val_examples must be > 0 to tune: the objective is "
          f"measured on the validation slice; received: {cfg.run.data.val_examples}")
    _check_range("alpha_range", cfg.alpha_range, top=("--alpha", MAX_LOSS_WEIGHT))
    if cfg.learning_rate_range is not None:
        _check_range("learning_rate_range", cfg.learning_rate_range,
                     top=("--learning_rate", MAX_LEARNING_RATE))
    if cfg.keep_fraction_range is not None:
        _check_range("keep_fraction_range", cfg.keep_fraction_range, high_max=1.0)
    return cfg


# ---- serving (python -m aalp_tf.export, python -m aalp_tf.serving) ---------------------------


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """Which checkpoint of a run `python -m aalp_tf.export` writes, and where.

    Attributes:
      model_dir: the run folder (config.json, checkpoints/).
      checkpoint: the epoch whose checkpoint is exported (0: the one --export_epoch picks).
      export_dir: None: the run's own export_dir.
      name: the model folder ("": the run's export name, <dataset>_<method>).
      version: None: one past the highest version present.
      warmup_batch_sizes: a warm-up request per signature and batch size (empty: none).
    """

    model_dir: str
    checkpoint: int = 0
    export_dir: Optional[str] = None
    name: str = ""
    version: Optional[int] = None
    warmup_batch_sizes: tuple = (1,)


def validate_export(cfg: ExportConfig) -> ExportConfig:
    """Checks ranges a user can get wrong; returns cfg unchanged when it is sound."""
    _check_ints(cfg)
    check(cfg.checkpoint >= 0, f"--checkpoint must be an epoch >= 1 (0: as --export_epoch picks); "
                               f"received: {cfg.checkpoint}")
    check(cfg.version is None or cfg.version >= 1,
          f"--version must be >= 1 (unset: the next free one); received: {cfg.version}")
    check(all(1 <= b <= INT32_MAX for b in cfg.warmup_batch_sizes),
          f"--warmup_batch_sizes must be batch sizes >= 1; received: {cfg.warmup_batch_sizes}")
    return cfg


@dataclasses.dataclass(frozen=True)
class PredictConfig:
    """One Predict request of `python -m aalp_tf.serving predict`.

    Attributes:
      server: HOST:PORT of TF Serving's gRPC port (REST port with `rest`).
      model: the served model's name.
      images: .npy file, [N, H, W, C] float in [0, 1] or uint8.
      rest: POST /v1/models/<model>:predict instead of gRPC.
      signature: a signature name, or "auto" (uint8 images: predict_uint8, else serving_default).
      version: None: the server's latest version.
      timeout: seconds to wait for the answer.
    """

    server: str
    model: str
    images: str
    rest: bool = False
    signature: str = "auto"
    version: Optional[int] = None
    timeout: float = 10.0


def validate_predict(cfg: PredictConfig) -> PredictConfig:
    """Checks ranges a user can get wrong; returns cfg unchanged when it is sound."""
    host, _, port = cfg.server.rpartition(":")
    _check_ints(cfg)
    check(bool(host) and port.isdigit() and 0 < int(port) < 65536,
          f"--server must be HOST:PORT; received: {cfg.server!r}")
    check(bool(cfg.model), "--model is not set: pass the served model's name, e.g. "
                           "--model=mnist_aalp")
    check(bool(cfg.images), "--images is not set: pass a .npy file of images [N, H, W, C]")
    check(finite(cfg.timeout) and 0 < cfg.timeout <= MAX_TIMEOUT,
          f"--timeout must be in (0, {MAX_TIMEOUT:g}] seconds; received: {cfg.timeout}")
    check(cfg.version is None or cfg.version >= 1,
          f"--version must be >= 1 (unset: the server's latest); received: {cfg.version}")
    return cfg
