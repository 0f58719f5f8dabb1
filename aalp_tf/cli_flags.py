"""Every command-line flag of aalp_tf, and the one place flags become a frozen config.

The paper's settings per dataset live in absl flagfiles, `flags/<dataset>.cfg`. When the command
line names `--dataset=X`, that file is read first, so any flag given on the command line wins.
"""
import os
import pathlib
import sys
from typing import List, Optional

from absl import flags

from aalp_tf import config as cfglib
from aalp_tf.datasets import DATASETS
from aalp_tf.errors import UsageError
from aalp_tf.methods import METHODS
from aalp_tf.models import BACKBONES

FLAGS = flags.FLAGS

# ---- data ---------------------------------------------------------------------------------
flags.DEFINE_enum("dataset", None, DATASETS.names(), "Dataset; its flagfile flags/<name>.cfg "
                  "supplies the paper's settings.")
flags.DEFINE_string("source_dir", None, "Folder with the original distribution files (offline); "
                    "unset: TFDS.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir.")
flags.DEFINE_integer("train_examples", 0, "Use this prefix of the training split (0: all).")
flags.DEFINE_integer("test_examples", 0, "Use this prefix of the test split (0: all).")
flags.DEFINE_integer("val_examples", 1000, "Validation slice held out of the end of the training "
                     "split, for per-epoch clean and robust accuracy (0: none).")
flags.DEFINE_enum("augment", "auto", ["auto", "on", "off"], "auto: crop+flip for CIFAR-10, "
                  "none for the digit datasets.")
flags.DEFINE_integer("batch_size", 128, "Global batch size.")

# ---- model --------------------------------------------------------------------------------
flags.DEFINE_enum("architecture", "auto", ["auto"] + BACKBONES.names(),
                  "Backbone; auto: the paper's model for the dataset.")
flags.DEFINE_integer("width", 0, "Base filter count (0: the architecture's published width).")
flags.DEFINE_float("keep_fraction", 0.5, "Guided Dropout: share of features kept (0.5: the "
                   "paper's median rule).")
flags.DEFINE_boolean("gd_rescale", False, "Guided Dropout: scale kept features by "
                     "1/keep_fraction (off: the paper's plain 0/1 mask).")

# ---- method -------------------------------------------------------------------------------
flags.DEFINE_enum("method", "aalp", METHODS.names(), "Training method.")
flags.DEFINE_float("alpha", 1.0, "Weight of the (adaptive) ALP term (Eq. 10).")
flags.DEFINE_float("trades_beta", 6.0, "TRADES' weight of the KL term.")
flags.DEFINE_boolean("guided_dropout", False, "Add Guided Dropout to any method (Table 3).")

# ---- adversary ----------------------------------------------------------------------------
flags.DEFINE_float("epsilon", None, "L-inf radius in pixel units of [0, 1] (e.g. 0.3, 8/255 = "
                   "0.0313725).")
flags.DEFINE_float("step_size", None, "PGD step size in pixel units.")
flags.DEFINE_integer("attack_steps", None, "PGD steps of the training adversary.")

# ---- training -----------------------------------------------------------------------------
flags.DEFINE_integer("epochs", None, "Epochs to train.")
flags.DEFINE_float("learning_rate", None, "Adam learning rate.")
flags.DEFINE_string("model_dir", None, "Run folder (config, checkpoints, logs, history); "
                    "default runs/<dataset>_<method>.")
flags.DEFINE_integer("seed", 0, "Seed of weights, data order, augmentation and random starts.")
flags.DEFINE_boolean("deterministic", True, "Deterministic TF ops (same seed, same numbers).")
flags.DEFINE_boolean("jit_compile", False, "XLA-compile the train step (slower on CPU).")
flags.DEFINE_integer("val_attack_steps", 0, "PGD steps for validation robust accuracy "
                     "(0: --attack_steps).")
flags.DEFINE_integer("keep_checkpoints", 5, "Checkpoints kept in the run folder (0: all).")
flags.DEFINE_string("export_dir", "saved_models", "Where SavedModels are exported.")
flags.DEFINE_string("export_name", "", "Export folder name (default <dataset>_<method>).")

# ---- evaluation ---------------------------------------------------------------------------
flags.DEFINE_string("model", None, "evaluate: a SavedModel folder (e.g. saved_models/mnist_aalp/1).")
flags.DEFINE_list("attacks", ["clean", "fgsm", "pgd10", "pgd20", "pgd40", "pgd100", "cw10",
                              "cw20", "cw40", "cw100"], "evaluate: attacks, comma-separated.")
flags.DEFINE_integer("restarts", 1, "evaluate: random restarts of PGD and CW.")
flags.DEFINE_string("output", None, "evaluate: JSON file for the results (default "
                    "evaluation/<name>-<version>.json).")

FLAGFILE_DIR_ENV = "AALP_FLAGS_DIR"


def flagfile_dir() -> pathlib.Path:
    """flags/ at the repository top (or $AALP_FLAGS_DIR)."""
    if os.environ.get(FLAGFILE_DIR_ENV):
        return pathlib.Path(os.environ[FLAGFILE_DIR_ENV])
    return pathlib.Path(__file__).resolve().parent.parent / "flags"


def _dataset_from_argv(argv: List[str]) -> Optional[str]:
    for i, arg in enumerate(argv):
        if arg.startswith("--dataset="):
            return arg.split("=", 1)[1]
        if arg == "--dataset" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def with_dataset_flagfile(argv: List[str]) -> List[str]:
    """Puts flags/<dataset>.cfg right after the program name, so the command line wins."""
    dataset = _dataset_from_argv(argv[1:])
    path = flagfile_dir() / f"{dataset}.cfg"
    if dataset in DATASETS and path.is_file():
        return [argv[0], f"--flagfile={path}"] + list(argv[1:])
    return list(argv)


def parse_flags(argv: List[str]) -> List[str]:
    """absl flags_parser: dataset flagfile first; a bad flag is one line and exit status 2."""
    try:
        return FLAGS(with_dataset_flagfile(argv))
    except flags.Error as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def _required(name: str):
    value = FLAGS[name].value
    if value is None:
        raise UsageError(f"--{name} is not set: pass it, or --dataset to read the paper's "
                         f"settings from {flagfile_dir()}/<dataset>.cfg")
    return value


def data_config() -> cfglib.DataConfig:
    dataset = _required("dataset")
    augment = {"auto": None, "on": True, "off": False}[FLAGS.augment]
    return cfglib.DataConfig(dataset=dataset, source_dir=FLAGS.source_dir,
                             data_dir=FLAGS.data_dir, train_examples=FLAGS.train_examples,
                             test_examples=FLAGS.test_examples, val_examples=FLAGS.val_examples,
                             augment=augment, batch_size=FLAGS.batch_size)


def attack_config() -> cfglib.AttackConfig:
    return cfglib.AttackConfig(epsilon=_required("epsilon"), step_size=_required("step_size"),
                               steps=_required("attack_steps"))


def config_from_flags() -> cfglib.RunConfig:
    """The training config, validated."""
    data = data_config()
    architecture = FLAGS.architecture
    if architecture == "auto":
        architecture = DATASETS.get(data.dataset).default_model
    method = cfglib.MethodConfig(name=FLAGS.method, alpha=FLAGS.alpha,
                                 trades_beta=FLAGS.trades_beta,
                                 guided_dropout=FLAGS.guided_dropout)
    model_dir = FLAGS.model_dir or os.path.join("runs", f"{data.dataset}_{method.name}")
    train = cfglib.TrainConfig(epochs=_required("epochs"),
                               learning_rate=_required("learning_rate"), model_dir=model_dir,
                               seed=FLAGS.seed, deterministic=FLAGS.deterministic,
                               jit_compile=FLAGS.jit_compile,
                               val_attack_steps=FLAGS.val_attack_steps,
                               keep_checkpoints=FLAGS.keep_checkpoints,
                               export_dir=FLAGS.export_dir, export_name=FLAGS.export_name)
    model = cfglib.ModelConfig(name=architecture, width=FLAGS.width,
                               keep_fraction=FLAGS.keep_fraction, gd_rescale=FLAGS.gd_rescale)
    return cfglib.validate(cfglib.RunConfig(data=data, model=model, method=method,
                                            attack=attack_config(), train=train))


def eval_config_from_flags() -> cfglib.EvalConfig:
    """The evaluation config, validated."""
    model = FLAGS.model
    if not model:
        raise UsageError("--model is not set: pass a SavedModel folder, e.g. "
                         "--model=saved_models/mnist_aalp/1")
    return cfglib.validate_eval(cfglib.EvalConfig(
        model=model, data=data_config(), attack=attack_config(),
        attacks=tuple(FLAGS.attacks), restarts=FLAGS.restarts, seed=FLAGS.seed,
        output=FLAGS.output))
