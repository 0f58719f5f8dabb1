"""Every command-line flag of aalp_tf, the one place flags become a frozen config, and how every
`python -m aalp_tf.X` command starts and fails: one line and status 2 on bad input.

The paper's settings per dataset live in absl flagfiles, `flags/<dataset>.cfg`. When the command
line names `--dataset=X`, that file is read first, so any flag given on the command line wins.
"""
import contextlib
import dataclasses
import functools
import importlib
import importlib.abc
import importlib.util
import os
import pathlib
import re
import shlex
import sys
import textwrap
import threading
from typing import Dict, List, Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's C++ start-up chatter off screen

from absl import app, flags, logging  # noqa: E402

from aalp_tf import config as cfglib  # noqa: E402
from aalp_tf.comparison import config as comparison_config  # noqa: E402
from aalp_tf.errors import UsageError  # noqa: E402

FLAGS = flags.FLAGS

# ---- which command reads which flag, for each command's --help ----------------------------
TRAIN, TUNE, COMPARE, EVALUATE, ANALYZE, EXPORT, SERVING = (
    "train", "tune", "compare", "evaluate", "analyze", "export", "serving")
RUNS = (TRAIN, TUNE, COMPARE)  # the commands that train runs: every run setting applies to them
ONE_RUN = (TRAIN, TUNE)  # compare sets these per cell: the method, the seed, the folders
DATA_READERS = RUNS + (EVALUATE, ANALYZE)
HELP_GROUPS = ("data", "model", "method", "attack", "training", "distribution", "evaluation",
               "analysis", "tuning", "comparison", "serving", "output")
_SHOWN: Dict[str, Dict[str, List[str]]] = {}  # command -> group -> flag names, in order

# The registries' built-in names, written out so that --help needs no TensorFlow (the registries
# live in modules that import it); tests/test_cli.py checks them against the registries. Values
# are checked against the registries after parsing, so a method or backbone registered by a
# module named in --imports is accepted too.
BUILTIN_NAMES = {
    "dataset": ("cifar10", "mnist", "svhn"),
    "method": ("aalp", "aalp_gd", "aalp_sw", "alp", "madry", "natural", "trades"),
    "architecture": ("lenet", "preact_resnet18", "resnet32", "resnet9", "wide_resnet"),
    "tuner": ("bayesian", "hyperband", "random"),
    "objective": ("robust", "tradeoff"),
    "signature": ("predict_uint8", "serving_default"),
}


def _define(kind: str, name: str, default, help_text: str, *, group: str, commands,
            groups: Optional[Dict[str, str]] = None, **kwargs) -> None:
    """flags.DEFINE_<kind>, and the flag's place in --help: `group` for every command in
    `commands`, unless `groups` names another group for a command."""
    getattr(flags, f"DEFINE_{kind}")(name, default, help=help_text, **kwargs)
    for command in commands:
        shown = (groups or {}).get(command, group)
        _SHOWN.setdefault(command, {}).setdefault(shown, []).append(name)


def _names(kind: str) -> str:
    return ", ".join(BUILTIN_NAMES[kind])


# ---- data ---------------------------------------------------------------------------------
_define("string", "dataset", None, f"Dataset: {_names('dataset')}; its flagfile "
        "flags/<name>.cfg supplies the paper's settings.", group="data",
        commands=DATA_READERS)
_define("string", "source_dir", None, "Folder with the original distribution files (offline); "
        "unset: TFDS.", group="data", commands=DATA_READERS)
_define("string", "data_dir", None, "TFDS data_dir.", group="data", commands=DATA_READERS)
_define("integer", "train_examples", 0, "Use this prefix of the training split (0: all).",
        group="data", commands=RUNS)
_define("integer", "test_examples", 0, "Use this prefix of the test split (0: all).",
        group="data", commands=DATA_READERS)
_define("integer", "val_examples", 1000, "Validation slice held out of the end of the training "
        "split, for per-epoch clean and robust accuracy (0: none).", group="data", commands=RUNS)
_define("enum", "augment", "auto", "auto: crop+flip for CIFAR-10, none for the digit datasets.",
        enum_values=["auto", "on", "off"], group="data", commands=RUNS)
_define("integer", "batch_size", 128, "Global batch size.", group="data",
        commands=DATA_READERS)

# ---- model --------------------------------------------------------------------------------
_define("string", "architecture", "auto", f"Backbone: {_names('architecture')}; auto: the "
        "paper's model for the dataset.", group="model", commands=RUNS)
_define("integer", "width", 0, "Base filter count (0: the architecture's published width).",
        group="model", commands=RUNS)
_define("integer", "depth", 0, "wide_resnet's depth, 6n+4 (0: 34, i.e. WRN-34-10).",
        group="model", commands=RUNS)
_define("integer", "widen_factor", 0, "wide_resnet's widening factor k (0: 10).", group="model",
        commands=RUNS)
_define("float", "keep_fraction", 0.5, "Guided Dropout: share of features kept (0.5: the "
        "paper's median rule).", group="model", commands=RUNS)
_define("boolean", "gd_rescale", False, "Guided Dropout: scale kept features by "
        "1/keep_fraction (off: the paper's plain 0/1 mask).", group="model", commands=RUNS)

# ---- method -------------------------------------------------------------------------------
_define("string", "method", "aalp", f"Training method: {_names('method')}, or one registered "
        "by a module in --imports.", group="method", commands=ONE_RUN)
_define("float", "alpha", 1.0, "Weight of the (adaptive) ALP term (Eq. 10).", group="method",
        commands=RUNS)
_define("float", "trades_beta", 6.0, "TRADES' weight of the KL term.", group="method",
        commands=RUNS)
_define("boolean", "guided_dropout", False, "Add Guided Dropout to any method (Table 3).",
        group="method", commands=RUNS)
_define("list", "imports", [], "Python modules to import first, e.g. my_project.methods: your "
        "own methods and backbones register themselves there (README, 'Your own method').",
        group="method", commands=RUNS)

# ---- adversary ----------------------------------------------------------------------------
_define("float", "epsilon", None, "L-inf radius in pixel units of [0, 1] (e.g. 0.3, 8/255 = "
        "0.0313725); default: the dataset's flagfile.", group="attack",
        commands=DATA_READERS)
_define("float", "step_size", None, "PGD step size in pixel units; default: the dataset's "
        "flagfile.", group="attack", commands=DATA_READERS)
_define("integer", "attack_steps", None, "PGD steps of the training adversary (analyze: of "
        "its adversary); default: the dataset's flagfile.", group="attack",
        commands=RUNS + (ANALYZE,))
_define("float", "epsilon_warmup_epochs", 0.0, "Ramp the training adversary's epsilon (and "
        "step) linearly from 0 over this many epochs (0: off, as in the paper).", group="attack",
        commands=RUNS)
_define("integer", "val_attack_steps", 0, "PGD steps for validation robust accuracy "
        "(0: --attack_steps).", group="attack", commands=RUNS)

# ---- training -----------------------------------------------------------------------------
_define("integer", "epochs", None, "Epochs to train; default: the dataset's flagfile.",
        group="training", commands=RUNS)
_define("float", "learning_rate", None, "Adam learning rate; default: the dataset's flagfile.",
        group="training", commands=RUNS)
_define("integer", "seed", 0, "Seed of weights, data order, augmentation and random starts.",
        group="training", commands=ONE_RUN + (EVALUATE, ANALYZE),
        groups={EVALUATE: "attack", ANALYZE: "attack"})
_define("boolean", "deterministic", True, "Deterministic TF ops (same seed, same numbers).",
        group="training", commands=RUNS)
_define("boolean", "jit_compile", False, "XLA-compile the train step (slower on CPU; needs "
        "--nodeterministic).", group="training", commands=RUNS)

# ---- distribution -------------------------------------------------------------------------
_define("enum", "strategy", "auto", "auto: multi_worker when TF_CONFIG names several workers, "
        "mirrored when several GPUs are visible, else default. --batch_size is the global "
        "batch.", enum_values=["auto", "default", "mirrored", "multi_worker"],
        group="distribution", commands=RUNS)
_define("boolean", "mixed_precision", False, "mixed_float16 with loss scaling on GPUs (logits, "
        "losses and attack perturbations stay float32); ignored on CPU.", group="distribution",
        commands=RUNS)
_define("boolean", "sync_batchnorm", False, "Batch-norm statistics over all replicas rather "
        "than per replica.", group="distribution", commands=RUNS)

# ---- output -------------------------------------------------------------------------------
_define("string", "model_dir", None, "Run folder (config, checkpoints, logs, history); default "
        "runs/<dataset>_<method> (tune: runs/<dataset>_<method>_tune; export: the run to "
        "export).", group="output", commands=ONE_RUN + (EXPORT,))
_define("integer", "keep_checkpoints", 5, "Checkpoints kept in the run folder (0: all), "
        "besides the one --export_epoch=best exports.", group="output", commands=RUNS)
_define("enum", "export_epoch", "best", "The epoch exported: best = highest "
        "val_robust_accuracy (robust overfitting, Rice et al. 2020), last = the last epoch.",
        enum_values=["best", "last"], group="output", commands=RUNS)
_define("string", "export_dir", "saved_models", "Where SavedModels are exported (export: "
        "default the run's own).", group="output", commands=ONE_RUN + (EXPORT,))
_define("string", "export_name", "", "Export folder name (default <dataset>_<method>; alias "
        "--name).", group="output", commands=ONE_RUN + (EXPORT,))
flags.DEFINE_alias("name", "export_name")
_define("integer", "analysis_probe", 0, "Record the paper's training analyses (Fig. 4, 9) "
        "after every epoch on this many validation examples into <model_dir>/analysis/ "
        "(0: off).", group="output", commands=RUNS)

# ---- evaluation ---------------------------------------------------------------------------
_define("string", "model", None, "evaluate: a SavedModel folder (e.g. saved_models/mnist_aalp/1)"
        "; serving predict: the served model's name (e.g. mnist_aalp).", group="evaluation",
        commands=(EVALUATE, SERVING), groups={SERVING: "serving"})
_define("list", "attacks", ["clean", "fgsm", "pgd10", "pgd20", "pgd40", "pgd100", "cw10", "cw20",
                            "cw40", "cw100"], "Attacks, comma-separated: clean, fgsm, pgd<k>, "
        "cw<k>, apgd-ce[<k>], apgd-t[<k>], square[<k>], autoattack[<k>].", group="evaluation",
        commands=(EVALUATE, COMPARE))
_define("integer", "restarts", 1, "Random restarts of PGD, CW, APGD and Square.",
        group="evaluation", commands=(EVALUATE, COMPARE))
_define("boolean", "checks", True, "Sanity checks against false robustness (logits not "
        "probabilities, determinism, non-zero gradients, accuracy falling with epsilon, FGSM >= "
        "PGD >= APGD, more effort never helping), reported beside the numbers.",
        group="evaluation", commands=(EVALUATE, COMPARE))
_define("integer", "check_examples", 100, "The checks run on the first this many test images.",
        group="evaluation", commands=(EVALUATE, COMPARE))
_define("string", "output", None, "JSON file for the results (default "
        "evaluation/<name>-<version>.json).", group="output", commands=(EVALUATE,))

# ---- analysis -----------------------------------------------------------------------------
_define("list", "models", [], "label:path pairs; a path is a run folder or a SavedModel version "
        "folder (e.g. natural:runs/mnist_natural,aalp:saved_models/mnist_aalp/1).",
        group="analysis", commands=(ANALYZE,))
_define("list", "what", ["all"], "all, or some of contributions, gradcam, sets, scatter, "
        "training.", group="analysis", commands=(ANALYZE,))
_define("string", "cam_layer", "", "Backbone layer for Grad-CAM (default: the last spatial "
        "layer, e.g. conv2 of lenet).", group="analysis", commands=(ANALYZE,))
_define("integer", "cam_images", 8, "Test images in the Grad-CAM figure.", group="analysis",
        commands=(ANALYZE,))
_define("string", "cam_source", "own", "Whose adversarial examples Grad-CAM shows: own (each "
        "model attacked itself) or a label from --models.", group="analysis",
        commands=(ANALYZE,))
_define("string", "out", "analysis", "analyze: folder for the figures and tables; compare: the "
        "study's results (cells/, results.jsonl, summary.md, compare.png; required).",
        group="output", commands=(ANALYZE, COMPARE))

# ---- tuning -------------------------------------------------------------------------------
_define("enum", "tuner", "random", "KerasTuner's search algorithm.",
        enum_values=list(BUILTIN_NAMES["tuner"]), group="tuning", commands=(TUNE,))
_define("integer", "max_trials", 10, "Trials of random and bayesian search (hyperband: set by "
        "--epochs and --hyperband_factor).", group="tuning", commands=(TUNE,))
_define("enum", "objective", "robust", "robust = validation PGD accuracy; tradeoff = harmonic "
        "mean of validation clean and PGD accuracy.",
        enum_values=list(BUILTIN_NAMES["objective"]), group="tuning", commands=(TUNE,))
_define("list", "alpha_range", ["0.1", "10"], "LOW,HIGH of alpha, log-uniform.",
        group="tuning", commands=(TUNE,))
_define("boolean", "tune_learning_rate", False, "Also search the learning rate.",
        group="tuning", commands=(TUNE,))
_define("list", "learning_rate_range", ["1e-5", "1e-3"], "LOW,HIGH of the learning rate, "
        "log-uniform (with --tune_learning_rate).", group="tuning", commands=(TUNE,))
_define("boolean", "tune_keep_fraction", False, "Also search Guided Dropout's keep fraction.",
        group="tuning", commands=(TUNE,))
_define("list", "keep_fraction_range", ["0.25", "0.75"], "LOW,HIGH of the keep fraction, "
        "uniform (with --tune_keep_fraction).", group="tuning", commands=(TUNE,))
_define("integer", "hyperband_factor", 3, "Hyperband's reduction factor.", group="tuning",
        commands=(TUNE,))
_define("boolean", "export_best", True, "Export the best trial's model at the end.",
        group="tuning", commands=(TUNE,))

# ---- serving (python -m aalp_tf.export, python -m aalp_tf.serving config|predict) -----------
_define("integer", "checkpoint", 0, "The epoch whose checkpoint to export (0: the one the "
        "run's --export_epoch picks, as training exported).", group="output", commands=(EXPORT,))
_define("integer", "version", None, "export: the version folder to write (default: one past "
        "the highest present); predict: the version to ask for (default: latest).",
        group="output", commands=(EXPORT, SERVING), groups={SERVING: "serving"})
_define("list", "warmup_batch_sizes", ["1"], "A TF Serving warm-up request per signature and "
        "batch size (empty: no warm-up file).", group="output", commands=(EXPORT,))
_define("string", "base_path", None, "config: the export folder as the server sees it "
        "(default: its absolute path; /models inside the tensorflow/serving image).",
        group="serving", commands=(SERVING,))
_define("string", "server", None, "predict: HOST:PORT of TF Serving (default localhost:8500, "
        "with --rest localhost:8501).", group="serving", commands=(SERVING,))
_define("string", "images", None, "predict: .npy file of images [N, H, W, C], float in [0, 1] "
        "or uint8.", group="serving", commands=(SERVING,))
_define("boolean", "rest", False, "predict: REST (POST /v1/models/NAME:predict) instead of "
        "gRPC.", group="serving", commands=(SERVING,))
_define("enum", "signature", "auto", "predict: the signature; auto: predict_uint8 for uint8 "
        "images, else serving_default.", enum_values=["auto", *BUILTIN_NAMES["signature"]],
        group="serving", commands=(SERVING,))
_define("float", "timeout", 10.0, "predict: seconds to wait for the server.", group="serving",
        commands=(SERVING,))

# ---- comparison (python -m aalp_tf.compare) ----------------------------------------------
_define("list", "methods", [], "The methods, comma-separated; cells run method-major in this "
        "order.", group="comparison", commands=(COMPARE,))
_define("list", "seeds", ["0"], "The training seeds, comma-separated (the same seed: the same "
        "data order and initial weights for every method).", group="comparison",
        commands=(COMPARE,))
_define("string", "baseline", "", "The method the others are compared with, paired by seed "
        "(default: the first of --methods).", group="comparison", commands=(COMPARE,))
_define("list", "attack_examples", [], "NAME:N,... evaluates these attacks on the first N test "
        "images only (N <= --test_examples), e.g. autoattack1000:1000.", group="comparison",
        commands=(COMPARE,))
_define("float", "eval_step_size", None, "The evaluation's PGD/CW step (default: the dataset's "
        "paper step from flags/<dataset>.cfg, what evaluate uses); --step_size is the training "
        "adversary's.", group="comparison", commands=(COMPARE,))
_define("integer", "eval_seed", 0, "Seed of the evaluation's random starts (the training "
        "seeds are --seeds).", group="comparison", commands=(COMPARE,))
_define("string", "work_dir", None, "Run folders and exports, a folder per cell (default: "
        "<out>/work; never commit it).", group="output", commands=(COMPARE,))
_define("boolean", "list_cells", False, "Print one line per cell, K<TAB>method<TAB>seed<TAB>"
        "status, and exit.", group="comparison", commands=(COMPARE,))
_define("integer", "cell", None, "Run only cell K of --list_cells (one index of a job array), "
        "then refresh the outputs from the finished cells.", group="comparison",
        commands=(COMPARE,))

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
    if dataset in BUILTIN_NAMES["dataset"] and path.is_file():
        return [argv[0], f"--flagfile={path}"] + list(argv[1:])
    return list(argv)


HELP_ARGS = ("--help", "-h", "-?", "--helpshort")


_PLACEHOLDERS = {"int": "N", "float": "NUMBER", "string": "TEXT"}


def _usage(flag) -> str:
    """`--name=PLACEHOLDER (default: D)`, or `--[no]name (default: true)` for a boolean."""
    if flag.boolean:
        return f"--[no]{flag.name} (default: {'true' if flag.default else 'false'})"
    values = getattr(flag.parser, "enum_values", None)
    shape = "|".join(values) if values else _PLACEHOLDERS.get(flag.flag_type(), "A,B,...")
    default = (flag.default_as_str or "none").strip("'") or "''"
    return f"--{flag.name}={shape} (default: {default})"


def help_text(command: str, doc: str) -> str:
    """The command's docstring, then its own flags by group, each with its default."""
    lines = [(doc or "").strip(), ""]
    shown = _SHOWN.get(command, {})
    for group in [g for g in HELP_GROUPS if g in shown]:
        lines.append(f"{group}:")
        for name in shown[group]:
            lines.append(f"  {_usage(FLAGS[name])}")
            # absl starts an enum's help with its values, which the usage line already shows.
            text = re.sub(r"^<[^>]*>: ", "", FLAGS[name].help)
            lines += textwrap.wrap(text, width=96, initial_indent=" " * 6,
                                   subsequent_indent=" " * 6)
        lines.append("")
    lines.append("Flags may also come from a file: --flagfile=FILE. TensorFlow's and absl's own "
                 "flags: --helpfull.")
    return "\n".join(lines)


def parse_flags(argv: List[str], *, command: str = "", doc: str = "") -> List[str]:
    """absl flags_parser: --help first (no TensorFlow needed), the dataset's flagfile next; a
    bad flag is one line and exit status 2."""
    if command and any(arg in HELP_ARGS for arg in argv[1:]):
        try:
            print(help_text(command, doc), flush=True)
        except BrokenPipeError:  # `--help | head` closed the pipe: nothing is wrong
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    try:
        return FLAGS(with_dataset_flagfile(argv))
    except flags.Error as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def import_modules(names) -> None:
    """--imports: the user's modules, imported before any registry is read."""
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as err:  # a user's module can fail in any way: one line, not a trace
            kind = type(err).__name__
            raise UsageError(f"--imports: module {name!r} could not be imported ({kind}: "
                             f"{err}); accepted: importable module names, e.g. "
                             "my_project.methods") from None


def _required(name: str):
    value = FLAGS[name].value
    if value is None and name == "dataset":  # no flagfile to point to without it
        raise UsageError(f"--dataset is not set; accepted: {_names('dataset')}")
    if value is None:
        raise UsageError(f"--{name} is not set: pass it, or --dataset to read the paper's "
                         f"settings from {flagfile_dir()}/<dataset>.cfg")
    return value


def data_config() -> cfglib.DataConfig:
    from aalp_tf.data.datasets import DATASETS

    dataset = DATASETS.get(_required("dataset")).name
    augment = {"auto": None, "on": True, "off": False}[FLAGS.augment]
    return cfglib.DataConfig(dataset=dataset, source_dir=FLAGS.source_dir,
                             data_dir=FLAGS.data_dir, train_examples=FLAGS.train_examples,
                             test_examples=FLAGS.test_examples, val_examples=FLAGS.val_examples,
                             augment=augment, batch_size=FLAGS.batch_size)


def attack_config() -> cfglib.AttackConfig:
    return cfglib.AttackConfig(epsilon=_required("epsilon"), step_size=_required("step_size"),
                               steps=_required("attack_steps"),
                               warmup_epochs=FLAGS.epsilon_warmup_epochs)


def config_from_flags() -> cfglib.RunConfig:
    """The training config, validated (names checked against the registries, after the
    modules in --imports have registered theirs)."""
    import_modules(FLAGS.imports)
    from aalp_tf.data.datasets import DATASETS
    from aalp_tf.methods import METHODS
    from aalp_tf.models import check_options

    data = data_config()
    architecture = FLAGS.architecture
    if architecture == "auto":
        architecture = DATASETS.get(data.dataset).default_model
    check_options(architecture, depth=FLAGS.depth, widen_factor=FLAGS.widen_factor)
    METHODS.get(FLAGS.method)
    method = cfglib.MethodConfig(name=FLAGS.method, alpha=FLAGS.alpha,
                                 trades_beta=FLAGS.trades_beta,
                                 guided_dropout=FLAGS.guided_dropout)
    model_dir = FLAGS.model_dir or os.path.join("runs", f"{data.dataset}_{method.name}")
    train = cfglib.TrainConfig(epochs=_required("epochs"),
                               learning_rate=_required("learning_rate"), model_dir=model_dir,
                               seed=FLAGS.seed, deterministic=FLAGS.deterministic,
                               jit_compile=FLAGS.jit_compile, strategy=FLAGS.strategy,
                               mixed_precision=FLAGS.mixed_precision,
                               val_attack_steps=FLAGS.val_attack_steps,
                               keep_checkpoints=FLAGS.keep_checkpoints,
                               export_dir=FLAGS.export_dir, export_name=FLAGS.export_name,
                               analysis_probe=FLAGS.analysis_probe,
                               export_epoch=FLAGS.export_epoch)
    model = cfglib.ModelConfig(name=architecture, width=FLAGS.width,
                               keep_fraction=FLAGS.keep_fraction, gd_rescale=FLAGS.gd_rescale,
                               sync_batchnorm=FLAGS.sync_batchnorm, depth=FLAGS.depth,
                               widen_factor=FLAGS.widen_factor)
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
        output=FLAGS.output, checks=FLAGS.checks, check_examples=FLAGS.check_examples))


def _labelled_path(item: str) -> tuple:
    """`label:path` -> (label, path); a bare path is labelled by its folder name (a SavedModel
    version folder such as saved_models/mnist_aalp/1 by its model's folder)."""
    label, sep, path = item.partition(":")
    if not sep:
        folder = pathlib.Path(item)
        return (folder.parent.name if folder.name.isdigit() else folder.name), item
    if not label or not path:
        raise UsageError(f"--models item {item!r} is not label:path; accepted: e.g. "
                         "aalp:runs/mnist_aalp")
    return label, path


def analysis_config_from_flags() -> cfglib.AnalysisConfig:
    """The analysis config, validated."""
    return cfglib.validate_analysis(cfglib.AnalysisConfig(
        models=tuple(_labelled_path(item) for item in FLAGS.models), out=FLAGS.out,
        data=data_config(), attack=attack_config(), what=tuple(FLAGS.what),
        cam_layer=FLAGS.cam_layer, cam_images=FLAGS.cam_images, cam_source=FLAGS.cam_source,
        seed=FLAGS.seed))


def _float_pair(name: str) -> tuple:
    raw = FLAGS[name].value
    try:
        return tuple(float(item) for item in raw)
    except ValueError:
        raise UsageError(f"--{name} must be two numbers LOW,HIGH; received: "
                         f"{','.join(raw)}") from None


def tune_config_from_flags() -> cfglib.TuneConfig:
    """The search config, validated; the search folder defaults to runs/<dataset>_<method>_tune."""
    run = config_from_flags()
    if FLAGS.model_dir is None:
        folder = os.path.join("runs", f"{run.data.dataset}_{run.method.name}_tune")
        run = run.replace(train=dataclasses.replace(run.train, model_dir=folder))
    return cfglib.validate_tune(cfglib.TuneConfig(
        run=run, tuner=FLAGS.tuner, objective=FLAGS.objective, max_trials=FLAGS.max_trials,
        alpha_range=_float_pair("alpha_range"),
        learning_rate_range=_float_pair("learning_rate_range") if FLAGS.tune_learning_rate
        else None,
        keep_fraction_range=_float_pair("keep_fraction_range") if FLAGS.tune_keep_fraction
        else None,
        hyperband_factor=FLAGS.hyperband_factor, export_best=FLAGS.export_best))


# ---- serving ------------------------------------------------------------------------------


def _int_list(name: str) -> tuple:
    raw = FLAGS[name].value
    cfglib.check(all(item.strip().isdigit() for item in raw), f"--{name} must be integers, "
                 f"comma-separated; received: {','.join(raw)}")
    return tuple(int(item) for item in raw)


def export_config_from_flags() -> cfglib.ExportConfig:
    """The export config, validated; --export_dir counts only when given (else the run's)."""
    if not FLAGS.model_dir:
        raise UsageError("--model_dir is not set: pass the run folder to export, e.g. "
                         "--model_dir=runs/mnist_aalp")
    return cfglib.validate_export(cfglib.ExportConfig(
        model_dir=FLAGS.model_dir, checkpoint=FLAGS.checkpoint,
        export_dir=FLAGS.export_dir if FLAGS["export_dir"].present else None,
        name=FLAGS.export_name, version=FLAGS.version,
        warmup_batch_sizes=_int_list("warmup_batch_sizes")))


def predict_config_from_flags() -> cfglib.PredictConfig:
    """The client's request, validated."""
    server = FLAGS.server or ("localhost:8501" if FLAGS.rest else "localhost:8500")
    return cfglib.validate_predict(cfglib.PredictConfig(
        server=server, model=FLAGS.model or "", images=FLAGS.images or "", rest=FLAGS.rest,
        signature=FLAGS.signature, version=FLAGS.version, timeout=FLAGS.timeout))


def _method_names() -> list:
    from aalp_tf.methods import METHODS  # after --imports: the user's methods count

    return METHODS.names()


def compare_config_from_flags() -> comparison_config.CompareConfig:
    """The study's config, validated: each cell's base run is exactly `train`'s config."""
    for name in ("method", "seed", "model_dir", "export_dir", "export_name"):
        if FLAGS[name].present:
            raise UsageError(f"--{name} does not apply to compare: each cell sets its own "
                             "(--methods, --seeds; folders under --work_dir; the evaluation's "
                             f"seed is --eval_seed); received: --{name}={FLAGS[name].value}")
    if not FLAGS["out"].present or not FLAGS.out:  # its default is analyze's folder
        raise UsageError("--out is not set: pass the study's folder, e.g. "
                         "--out=benchmarks/results/mnist_seeds")
    run = config_from_flags()
    step = FLAGS.eval_step_size
    if step is None:
        paper = flagfile_dir() / f"{run.data.dataset}.cfg"
        value = comparison_config.flagfile_value(paper, "step_size")
        if value is None:
            raise UsageError(f"--eval_step_size is not set and {paper} gives no --step_size; "
                             "accepted: --eval_step_size in (0, 1]")
        step = float(value)
    methods = tuple(m.strip() for m in FLAGS.methods)
    out = comparison_config.absolute(FLAGS.out)
    # The study's command, as summary.md shows it whichever cell's process writes it last.
    shown = [arg for arg in sys.argv[1:] if not arg.startswith(("--cell=", "--list_cells"))]
    return comparison_config.validate_compare(comparison_config.CompareConfig(
        run=run, methods=methods, seeds=comparison_config.parse_seeds(FLAGS.seeds),
        baseline=FLAGS.baseline or (methods[0] if methods else ""),
        attacks=tuple(a.strip().lower() for a in FLAGS.attacks),
        test_examples=FLAGS.test_examples,
        attack_examples=comparison_config.parse_attack_examples(FLAGS.attack_examples),
        eval_step_size=step, eval_seed=FLAGS.eval_seed, restarts=FLAGS.restarts,
        checks=FLAGS.checks, check_examples=FLAGS.check_examples, out=out,
        work_dir=comparison_config.absolute(FLAGS.work_dir or os.path.join(out, "work")),
        cell=FLAGS.cell, list_cells=FLAGS.list_cells,
        command=shlex.join(["python", "-m", "aalp_tf.compare", *shown])),
        known_methods=_method_names())


# ---- running a command -------------------------------------------------------------------

# What TensorFlow's libraries log while they load, before they read TF_CPP_MIN_LOG_LEVEL, so that
# no setting hides it: absl's notice that logging is not set up yet, the notice that oneDNN is on
# (aalp_tf turns it on on purpose) and, without a CUDA driver, that no GPU will be used. Each comes
# twice: the profiler's library carries its own copy of the logging code.
_LOAD_NOTICES = (b"WARNING: All log messages before absl::InitializeLog() is called are written "
                 b"to STDERR", b"] oneDNN custom operations are on. ",
                 b"] Could not find cuda drivers on your machine, GPU will not be used.")
# Without a driver, the first look for a GPU then logs cuInit's failure as an error: expected.
_NO_DRIVER, _CUINIT_FAILED = _LOAD_NOTICES[2], b"] failed call to cuInit: "


@contextlib.contextmanager
def stderr_without(drop):
    """Runs the block with file descriptor 2 (C++ and Python alike) read by a thread that
    passes on every line but those drop(line) is true for."""
    sys.stderr.flush()
    real = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward():
        with open(read_end, "rb") as pipe:
            for line in pipe:
                if not drop(line):
                    os.write(real, line)

    thread = threading.Thread(target=forward, daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(real, 2)  # closes the pipe's last writer: the thread reads to its end
        thread.join(timeout=10)
        os.close(real)


def load_notice_filter():
    """drop(line) -> True for the notices above, and for cuInit's failure once the notice that
    there is no CUDA driver has passed (with a driver, that failure is a real error)."""
    no_driver = []

    def drop(line: bytes) -> bool:
        if _NO_DRIVER in line:
            no_driver.append(line)
        return any(notice in line for notice in _LOAD_NOTICES) or bool(
            no_driver and _CUINIT_FAILED in line)

    return drop


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Runs the first `import tensorflow`, wherever a command makes it, and the first look for
    a GPU inside stderr_without(load_notice_filter()): the notices go, any other line stays."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once; and the real finders answer the call below
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def exec_module(module):
            with stderr_without(load_notice_filter()):
                load(module)
                module.config.list_physical_devices("GPU")

        spec.loader.exec_module = exec_module
        return spec


def quiet_tensorflow_start() -> None:
    """Holds back TensorFlow's load notices when it is imported (not now: a command that fails
    on its flags, or --help, never needs it). TF_CPP_MIN_LOG_LEVEL=0 keeps them."""
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0" or any(
            isinstance(finder, _QuietTensorFlowImport) for finder in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietTensorFlowImport())


def run(main, command: str) -> None:
    """absl's app.run with our flag parser; UsageError and Ctrl-C end in one line, no traceback.

    Args:
      main: the command's main(argv).
      command: its name (train, evaluate, ...): --help lists the flags it reads.
    """

    def guarded(argv):
        if logging.get_verbosity() == logging.INFO:  # absl's default: TF's savers chatter at INFO
            logging.set_verbosity(logging.WARNING)
        try:
            main(argv)
        except UsageError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted: the run folder keeps every completed epoch; run the same "
                  "command again to resume", file=sys.stderr)
            sys.exit(130)

    quiet_tensorflow_start()
    doc = sys.modules[main.__module__].__doc__
    app.run(guarded, flags_parser=functools.partial(parse_flags, command=command, doc=doc))


def reject_positional(argv) -> None:
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}; every option is a --flag "
                         "(see --help)")
