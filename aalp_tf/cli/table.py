"""Every command-line flag of aalp_tf: its type, default and help, the commands that read it, and
where each command's --help shows it.

A flag belongs to the commands listed with it; any other command refuses it (cli.runner). Where
a flag means something particular to one command, `help_for`, `default_for` and `group_for` say
so for that command's --help; absl's own `--helpfull` shows the general text.

To add a setting: a field on its config dataclass (aalp_tf.config), and here a `_define` named as
the field for the commands that read it; cli.configs picks it up (its FLAG_OF only when the
names differ). absl's key flags were not used for --help: absl groups flags by the module that
defines them, with one text per flag, and we want groups and per-command texts in one table.
"""
from typing import Dict, List, Optional, Tuple

from absl import flags

FLAGS = flags.FLAGS

TRAIN, TUNE, COMPARE, EVALUATE, ANALYZE, EXPORT, SERVING = (
    "train", "tune", "compare", "evaluate", "analyze", "export", "serving")
RUNS = (TRAIN, TUNE, COMPARE)  # the commands that train runs: every run setting applies to them
ONE_RUN = (TRAIN, TUNE)  # compare sets these per cell: the method, the seed, the folders
DATA_READERS = RUNS + (EVALUATE, ANALYZE)
READERS_OF_RUNS = DATA_READERS + (EXPORT,)  # --imports: a run may use the user's own method
HELP_GROUPS = ("data", "model", "method", "attack", "training", "distribution", "evaluation",
               "analysis", "tuning", "comparison", "serving", "output")


class Shown:
    """Where the flags appear in each command's --help."""

    groups: Dict[str, Dict[str, List[str]]] = {}  # command -> group -> flag names, in order
    helps: Dict[Tuple[str, str], str] = {}  # (command, flag) -> that command's help text
    defaults: Dict[Tuple[str, str], str] = {}  # (command, flag) -> the default it shows
    aliases: Dict[str, List[str]] = {}  # flag -> its other spellings
    # flag -> (module, registry): the names it accepts, shown by --help and checked after
    # --imports has registered the user's own; values in `also` are accepted besides.
    registries: Dict[str, Tuple[str, str, Tuple[str, ...]]] = {}


def commands_of(name: str) -> List[str]:
    return [c for c, groups in Shown.groups.items() if any(name in g for g in groups.values())]


def flags_of(command: str) -> set:
    return {name for group in Shown.groups.get(command, {}).values() for name in group}


def every_flag() -> set:
    """The flags of every command (absl's and TensorFlow's own flags are not among them)."""
    return {name for command in Shown.groups for name in flags_of(command)}


class FractionParser(flags.FloatParser):
    """A float that may be written as a fraction, A/B (--epsilon=8/255)."""

    def convert(self, argument):
        if isinstance(argument, str) and "/" in argument:
            top, _, bottom = argument.partition("/")
            try:
                return float(top) / float(bottom)
            except (ValueError, ZeroDivisionError):
                raise ValueError(f"expected a number or a fraction A/B such as 8/255; "
                                 f"received: {argument}") from None
        return super().convert(argument)

    def flag_type(self):
        return "fraction"


def _define(kind: str, name: str, default, help_text: str, *, group: str, commands,
            help_for: Optional[Dict[str, str]] = None,
            default_for: Optional[Dict[str, str]] = None,
            group_for: Optional[Dict[str, str]] = None, alias: Optional[str] = None,
            registry: Optional[Tuple[str, str]] = None, also: Tuple[str, ...] = (),
            **kwargs) -> None:
    """flags.DEFINE_<kind> (or a fraction flag), and the flag's place in the --help of every
    command in `commands`: `group`, unless `group_for` names another group for a command."""
    if kind == "fraction":
        flags.DEFINE(FractionParser(), name, default, help_text)
    else:
        getattr(flags, f"DEFINE_{kind}")(name, default, help=help_text, **kwargs)
    if alias:
        flags.DEFINE_alias(alias, name)
        Shown.aliases.setdefault(name, []).append(alias)
    if registry:
        Shown.registries[name] = (*registry, also)
    for command in commands:
        shown = (group_for or {}).get(command, group)
        Shown.groups.setdefault(command, {}).setdefault(shown, []).append(name)
        for table, per_command in ((Shown.helps, help_for), (Shown.defaults, default_for)):
            if per_command and command in per_command:
                table[(command, name)] = per_command[command]


# ---- data ---------------------------------------------------------------------------------
_define("string", "dataset", None, "Dataset; the paper's settings for it (aalp_tf.paper) fill "
        "in every flag not given.", group="data", commands=DATA_READERS,
        registry=("aalp_tf.data.datasets", "DATASETS"))
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
_define("string", "backbone", "auto", "The network under the classifier head; auto: the "
        "paper's for the dataset, or one registered by a module in --imports.", group="model",
        commands=RUNS, alias="architecture", registry=("aalp_tf.models", "BACKBONES"),
        also=("auto",))
_define("integer", "width", 0, "Base filter count (0: the backbone's published width).",
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
_define("string", "method", "aalp", "Training method, or one registered by a module in "
        "--imports.", group="method", commands=ONE_RUN, registry=("aalp_tf.methods", "METHODS"))
_define("float", "alpha", 1.0, "Weight of the (adaptive) ALP term (Eq. 10).", group="method",
        commands=RUNS)
_define("float", "trades_beta", 6.0, "TRADES' weight of the KL term.", group="method",
        commands=RUNS)
_define("boolean", "guided_dropout", False, "Add Guided Dropout to any method (Table 3).",
        group="method", commands=RUNS)
_READ_RUN = "Python modules to import first, e.g. my_project.methods: the methods and " \
            "backbones of your own that the model was trained with register themselves there."
_define("list", "imports", [], "Python modules to import first, e.g. my_project.methods: your "
        "own methods and backbones register themselves there (README, 'Your own method').",
        group="method", commands=READERS_OF_RUNS,
        group_for={EVALUATE: "model", ANALYZE: "model", EXPORT: "model"},
        help_for={EVALUATE: _READ_RUN, ANALYZE: _READ_RUN, EXPORT: _READ_RUN})

# ---- adversary ----------------------------------------------------------------------------
_define("fraction", "epsilon", None, "L-inf radius in pixel units of [0, 1], a number or a "
        "fraction (0.3, 8/255).", group="attack", commands=DATA_READERS)
_define("fraction", "step_size", None, "PGD step size in pixel units (0.01, 2/255).",
        group="attack", commands=DATA_READERS,
        help_for={TRAIN: "The training adversary's PGD step in pixel units (0.01, 2/255).",
                  TUNE: "The training adversary's PGD step in pixel units (0.01, 2/255).",
                  COMPARE: "The training adversary's PGD step in pixel units (0.01, 2/255); "
                           "the evaluation's is --eval_step_size.",
                  EVALUATE: "The PGD and CW step in pixel units (0.01, 2/255).",
                  ANALYZE: "The adversary's PGD step in pixel units (0.01, 2/255)."})
_define("enum", "norm", "linf", "The threat model: linf (the paper's) or l2; epsilon and the "
        "step are in its units (L2: of the whole image, e.g. 2 on MNIST, 0.5 on CIFAR-10, which "
        "--norm=l2 needs given: the paper's values are L-inf).", enum_values=["linf", "l2"],
        group="attack", commands=DATA_READERS)
_define("enum", "adversary", "pgd", "The training adversary: pgd (PGD-k, the paper's), fgsm_rs "
        "(FGSM from a random start, step 1.25*epsilon; Wong et al. 2020) or n_fgsm (noise "
        "2*epsilon, step epsilon, no projection; de Jorge et al. 2022). Validation uses PGD.",
        enum_values=["pgd", "fgsm_rs", "n_fgsm"], group="attack", commands=RUNS)
_define("integer", "attack_steps", None, "PGD steps of the training adversary.",
        group="attack", commands=RUNS + (ANALYZE,),
        help_for={ANALYZE: "PGD steps of the adversary whose examples are analysed."})
_define("float", "epsilon_warmup_epochs", 0.0, "Ramp the training adversary's epsilon (and "
        "step) linearly from 0 over this many epochs (0: off, as in the paper).", group="attack",
        commands=RUNS)
_define("integer", "val_attack_steps", 0, "PGD steps for validation robust accuracy "
        "(0: --attack_steps).", group="attack", commands=RUNS)

# ---- training -----------------------------------------------------------------------------
_define("integer", "epochs", None, "Epochs to train.", group="training", commands=RUNS)
_define("float", "learning_rate", None, "Adam learning rate.", group="training", commands=RUNS)
_define("enum", "lr_schedule", "constant", "constant; cyclic (one cycle: linear up to "
        "--learning_rate at 2/5 of the steps, then down to 0; the fast-training papers); "
        "piecewise (x0.1 at 50% and 75% of the steps).",
        enum_values=["constant", "cyclic", "piecewise"], group="training", commands=RUNS)
_define("float", "awp_gamma", 0.0, "Adversarial weight perturbation (Wu et al. 2020): its size "
        "relative to each weight's norm, 5e-3 to 1e-2 in the paper (0: off). One extra forward "
        "and backward pass per step.", group="training", commands=RUNS)
_SEED_OF_ATTACKS = "Seed of the attacks' random starts."
_define("integer", "seed", 0, "Seed of weights, data order, augmentation and random starts.",
        group="training", commands=ONE_RUN + (EVALUATE, ANALYZE),
        group_for={EVALUATE: "attack", ANALYZE: "attack"},
        help_for={EVALUATE: _SEED_OF_ATTACKS, ANALYZE: _SEED_OF_ATTACKS})
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
_define("string", "model_dir", None, "Run folder (config, checkpoints, logs, history).",
        group="output", commands=ONE_RUN + (EXPORT,),
        default_for={TRAIN: "runs/<dataset>_<method>", TUNE: "runs/<dataset>_<method>_tune",
                     EXPORT: "none: required"},
        help_for={TUNE: "The search folder: the tuner's state and one run folder per trial.",
                  EXPORT: "The run folder to export from."})
_define("boolean", "wait", False, "When another process holds the run folder (its lock names "
        "the host and PID), wait for it instead of exiting.", group="output", commands=(TRAIN,))
_define("integer", "keep_checkpoints", 5, "Checkpoints kept in the run folder (0: all), "
        "besides the one --export_epoch=best exports.", group="output", commands=RUNS)
_define("enum", "export_epoch", "best", "The epoch exported: best = highest "
        "val_robust_accuracy (robust overfitting, Rice et al. 2020), last = the last epoch.",
        enum_values=["best", "last"], group="output", commands=RUNS)
_define("string", "export_dir", "saved_models", "Where the SavedModel is exported, as "
        "<export_dir>/<export_name>/<version>/.", group="output", commands=ONE_RUN + (EXPORT,),
        default_for={EXPORT: "the run's own"})
_define("string", "export_name", "", "Export folder name.", group="output",
        commands=ONE_RUN + (EXPORT,), alias="name",
        default_for={TRAIN: "<dataset>_<method>", TUNE: "<dataset>_<method>",
                     EXPORT: "the run's own"})
_define("integer", "analysis_probe", 0, "Record the paper's training analyses (Fig. 4, 9) "
        "after every epoch on this many validation examples into <model_dir>/analysis/ "
        "(0: off).", group="output", commands=RUNS)
_define("string", "output_dir", "analysis", "Folder of the command's results.", group="output",
        commands=(ANALYZE, COMPARE), alias="out", default_for={COMPARE: "none: required"},
        help_for={ANALYZE: "Folder for the figures and tables.",
                  COMPARE: "The study's folder: cells/, results.jsonl, summary.md, "
                           "compare.png, settings.json."})
_define("string", "output_file", None, "JSON file for the results.", group="output",
        commands=(EVALUATE,), alias="output",
        default_for={EVALUATE: "evaluation/<name>-<version>.json"})

# ---- evaluation ---------------------------------------------------------------------------
_define("string", "model", None, "The model to evaluate: a SavedModel folder (ours, e.g. "
        "saved_models/mnist_aalp/1, or any whose serving_default maps one image input to one "
        "logits output, such as a Keras model.export) or a .keras file.", group="evaluation",
        commands=(EVALUATE,))
_define("string", "input_key", None, "The SavedModel signature's image input (default: "
        "`images`, or its only input).", group="evaluation", commands=(EVALUATE,))
_define("string", "output_key", None, "The SavedModel signature's logits output (default: "
        "`logits`, or its only output).", group="evaluation", commands=(EVALUATE,))
_define("string", "labels", None, "With --images: .npy file of integer labels [N] (instead of "
        "--dataset).", group="data", commands=(EVALUATE,))
_define("string", "data", None, "Instead of --dataset: .npz file with `images` [N, H, W, C] "
        "(float in [0, 1]) and integer `labels` [N].", group="data", commands=(EVALUATE,))
_define("string", "save_adversarial", None, ".npz file for each attack's adversarial images "
        "(`adversarial_<attack>`), each example's correctness under it (`correct_<attack>`) "
        "and the `labels`.", group="output", commands=(EVALUATE,))
_define("list", "attacks", ["clean", "fgsm", "pgd10", "pgd20", "pgd40", "pgd100", "cw10", "cw20",
                            "cw40", "cw100"], "Attacks, comma-separated: clean, fgsm, pgd<k>, "
        "cw<k>, apgd-ce[<k>], apgd-t[<k>], fab-t[<k>], square[<k>], autoattack (the standard "
        "version: APGD-CE, APGD-T, FAB-T, Square 5000), aa-lite[<k>] (not standard: no FAB-T, "
        "Square k queries).", group="evaluation",
        commands=(EVALUATE, COMPARE))
_define("integer", "restarts", 1, "Random restarts of PGD, CW, APGD and Square.",
        group="evaluation", commands=(EVALUATE, COMPARE))
_define("boolean", "checks", True, "Sanity checks against false robustness (logits not "
        "probabilities, determinism, non-zero gradients, accuracy falling with epsilon, FGSM >= "
        "PGD >= APGD, more effort never helping), reported beside the numbers.",
        group="evaluation", commands=(EVALUATE, COMPARE))
_define("integer", "check_examples", 100, "The checks run on the first this many test images.",
        group="evaluation", commands=(EVALUATE, COMPARE))

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

# ---- tuning -------------------------------------------------------------------------------
_define("string", "tuner", "random", "KerasTuner's search algorithm.", group="tuning",
        commands=(TUNE,), registry=("aalp_tf.tuning.tuners", "TUNERS"))
_define("integer", "max_trials", 10, "Trials of random and bayesian search (hyperband: set by "
        "--epochs and --hyperband_factor).", group="tuning", commands=(TUNE,))
_define("string", "objective", "robust", "robust = validation PGD accuracy; tradeoff = harmonic "
        "mean of validation clean and PGD accuracy.", group="tuning", commands=(TUNE,),
        registry=("aalp_tf.tuning.search_space", "OBJECTIVES"))
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
_define("integer", "epoch", 0, "The epoch whose checkpoint to export (0: the one the run's "
        "--export_epoch picks, as training exported).", group="output", commands=(EXPORT,),
        alias="checkpoint")
_define("integer", "version", None, "The SavedModel version.", group="output",
        commands=(EXPORT, SERVING), group_for={SERVING: "serving"},
        default_for={EXPORT: "one past the highest present", SERVING: "the server's latest"},
        help_for={EXPORT: "The version folder to write.",
                  SERVING: "predict: the version to ask the server for."})
_define("list", "warmup_batch_sizes", ["1"], "A TF Serving warm-up request per signature and "
        "batch size (empty: no warm-up file).", group="output", commands=(EXPORT,))
_define("string", "base_path", None, "config: the export folder as the server sees it "
        "(default: its absolute path; /models inside the tensorflow/serving image).",
        group="serving", commands=(SERVING,))
_define("string", "server", None, "predict: HOST:PORT of TF Serving (default localhost:8500, "
        "with --rest localhost:8501).", group="serving", commands=(SERVING,))
_define("string", "model_name", None, "predict: the served model's name (e.g. mnist_aalp).",
        group="serving", commands=(SERVING,))
_define("string", "images", None, "predict: .npy file of images [N, H, W, C], float in [0, 1] "
        "or uint8.", group="serving", commands=(SERVING, EVALUATE), group_for={EVALUATE: "data"},
        help_for={EVALUATE: "Instead of --dataset: .npy file of images [N, H, W, C], float in "
                            "[0, 1] (uint8 is refused: divide by 255), with --labels."})
_define("boolean", "rest", False, "predict: REST (POST /v1/models/NAME:predict) instead of "
        "gRPC.", group="serving", commands=(SERVING,))
_define("string", "signature", "auto", "predict: the signature; auto: predict_uint8 for uint8 "
        "images, else serving_default.", group="serving", commands=(SERVING,),
        registry=("aalp_tf.signatures", "SIGNATURES"), also=("auto",))
_define("float", "timeout", 10.0, "predict: seconds to wait for the server.", group="serving",
        commands=(SERVING,))

# ---- comparison (python -m aalp_tf.compare) ----------------------------------------------
_define("list", "methods", [], "The methods, comma-separated; cells run method-major in this "
        "order.", group="comparison", commands=(COMPARE,))
_define("list", "seeds", ["0"], "The training seeds, comma-separated (the same seed: the same "
        "data order and initial weights for every method).", group="comparison",
        commands=(COMPARE,))
_define("string", "baseline", "", "The method the others are compared with, paired by seed.",
        group="comparison", commands=(COMPARE,), default_for={COMPARE: "the first of --methods"})
_define("list", "attack_examples", [], "NAME:N,... evaluates these attacks on the first N test "
        "images only (N <= --test_examples), e.g. autoattack1000:1000.", group="comparison",
        commands=(COMPARE,))
_define("fraction", "eval_step_size", None, "The evaluation's PGD/CW step, as evaluate uses it "
        "(--step_size is the training adversary's).", group="comparison", commands=(COMPARE,),
        default_for={COMPARE: "the paper's step for the dataset"})
_define("integer", "eval_seed", 0, "Seed of the evaluation's random starts (the training "
        "seeds are --seeds).", group="comparison", commands=(COMPARE,))
_define("string", "runs_dir", None, "Run folders and exports, a folder per cell (never commit "
        "it).", group="output", commands=(COMPARE,), alias="work_dir",
        default_for={COMPARE: "<output_dir>/work"})
_define("boolean", "list_cells", False, "Print one line per cell, K<TAB>method<TAB>seed<TAB>"
        "status, and exit.", group="comparison", commands=(COMPARE,))
_define("integer", "cell", None, "Run only cell K of --list_cells (one index of a job array), "
        "then refresh the outputs from the finished cells.", group="comparison",
        commands=(COMPARE,))
