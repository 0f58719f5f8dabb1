"""Every command-line flag of aalp_tf, the one place flags become a frozen config, and how every
`python -m aalp_tf.X` command starts and fails: one line and status 2 on bad input.

The paper's settings per dataset live in absl flagfiles, `flags/<dataset>.cfg`. When the command
line names `--dataset=X`, that file is read first, so any flag given on the command line wins.
"""
import dataclasses
import os
import pathlib
import sys
from typing import List, Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's C++ start-up chatter off screen

from absl import app, flags, logging  # noqa: E402

from aalp_tf import config as cfglib  # noqa: E402
from aalp_tf.data.datasets import DATASETS  # noqa: E402
from aalp_tf.errors import UsageError  # noqa: E402
from aalp_tf.serving.saved_model import SIGNATURES  # noqa: E402
from aalp_tf.methods import METHODS  # noqa: E402
from aalp_tf.models import BACKBONES  # noqa: E402
from aalp_tf.tuning.search_space import OBJECTIVES, TUNERS  # noqa: E402

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
flags.DEFINE_float("epsilon_warmup_epochs", 0.0, "Ramp the training adversary's epsilon (and "
                   "step) linearly from 0 over this many epochs (0: off, as in the paper).")

# ---- training -----------------------------------------------------------------------------
flags.DEFINE_integer("epochs", None, "Epochs to train.")
flags.DEFINE_float("learning_rate", None, "Adam learning rate.")
flags.DEFINE_string("model_dir", None, "Run folder (config, checkpoints, logs, history); "
                    "default runs/<dataset>_<method>.")
flags.DEFINE_integer("seed", 0, "Seed of weights, data order, augmentation and random starts.")
flags.DEFINE_boolean("deterministic", True, "Deterministic TF ops (same seed, same numbers).")
flags.DEFINE_boolean("jit_compile", False, "XLA-compile the train step (slower on CPU; "
                     "needs --nodeterministic).")

# ---- distribution -------------------------------------------------------------------------
flags.DEFINE_enum("strategy", "auto", ["auto", "default", "mirrored", "multi_worker"],
                  "auto: multi_worker when TF_CONFIG names several workers, mirrored when "
                  "several GPUs are visible, else default. --batch_size is the global batch.")
flags.DEFINE_boolean("mixed_precision", False, "mixed_float16 with loss scaling on GPUs (logits, "
                     "losses and attack perturbations stay float32); ignored on CPU.")
flags.DEFINE_boolean("sync_batchnorm", False, "Batch-norm statistics over all replicas rather "
                     "than per replica.")
flags.DEFINE_integer("val_attack_steps", 0, "PGD steps for validation robust accuracy "
                     "(0: --attack_steps).")
flags.DEFINE_integer("keep_checkpoints", 5, "Checkpoints kept in the run folder (0: all).")
flags.DEFINE_string("export_dir", "saved_models", "Where SavedModels are exported.")
flags.DEFINE_string("export_name", "", "Export folder name (default <dataset>_<method>).")
flags.DEFINE_integer("analysis_probe", 0, "Record the paper's training analyses (Fig. 4, 9) "
                     "after every epoch on this many validation examples into "
                     "<model_dir>/analysis/ (0: off).")

# ---- evaluation ---------------------------------------------------------------------------
flags.DEFINE_string("model", None, "evaluate: a SavedModel folder (e.g. saved_models/mnist_aalp/1)"
                    "; serving predict: the served model's name (e.g. mnist_aalp).")
flags.DEFINE_list("attacks", ["clean", "fgsm", "pgd10", "pgd20", "pgd40", "pgd100", "cw10",
                              "cw20", "cw40", "cw100"], "evaluate: attacks, comma-separated.")
flags.DEFINE_integer("restarts", 1, "evaluate: random restarts of PGD, CW, APGD and Square.")
flags.DEFINE_string("output", None, "evaluate: JSON file for the results (default "
                    "evaluation/<name>-<version>.json).")

# ---- strong evaluation: sanity checks (issue 7) --------------------------------------------
flags.DEFINE_boolean("checks", True, "evaluate: sanity checks against false robustness (logits "
                     "not probabilities, determinism, non-zero gradients, accuracy falling with "
                     "epsilon, FGSM >= PGD >= APGD, more effort never helping), reported beside "
                     "the numbers.")
flags.DEFINE_integer("check_examples", 100, "evaluate: the checks run on the first this many "
                     "test images.")

# ---- analysis -----------------------------------------------------------------------------
flags.DEFINE_list("models", [], "analyze: label:path pairs; a path is a run folder or a "
                  "SavedModel version folder (e.g. natural:runs/mnist_natural,aalp:"
                  "saved_models/mnist_aalp/1).")
flags.DEFINE_string("out", "analysis", "analyze: folder for the figures and tables.")
flags.DEFINE_list("what", ["all"], "analyze: all, or some of contributions, gradcam, sets, "
                  "scatter, training.")
flags.DEFINE_string("cam_layer", "", "analyze: backbone layer for Grad-CAM (default: the last "
                    "spatial layer, e.g. conv2 of lenet).")
flags.DEFINE_integer("cam_images", 8, "analyze: test images in the Grad-CAM figure.")
flags.DEFINE_string("cam_source", "own", "analyze: whose adversarial examples Grad-CAM shows: "
                    "own (each model attacked itself) or a label from --models.")

# ---- tuning -------------------------------------------------------------------------------
flags.DEFINE_enum("tuner", "random", TUNERS.names(), "tune: KerasTuner's search algorithm.")
flags.DEFINE_integer("max_trials", 10, "tune: trials of random and bayesian search (hyperband: "
                     "set by --epochs and --hyperband_factor).")
flags.DEFINE_enum("objective", "robust", OBJECTIVES.names(), "tune: robust = validation PGD "
                  "accuracy; tradeoff = harmonic mean of validation clean and PGD accuracy.")
flags.DEFINE_list("alpha_range", ["0.1", "10"], "tune: LOW,HIGH of alpha, log-uniform.")
flags.DEFINE_boolean("tune_learning_rate", False, "tune: also search the learning rate.")
flags.DEFINE_list("learning_rate_range", ["1e-5", "1e-3"], "tune: LOW,HIGH of the learning "
                  "rate, log-uniform (with --tune_learning_rate).")
flags.DEFINE_boolean("tune_keep_fraction", False, "tune: also search Guided Dropout's keep "
                     "fraction.")
flags.DEFINE_list("keep_fraction_range", ["0.25", "0.75"], "tune: LOW,HIGH of the keep "
                  "fraction, uniform (with --tune_keep_fraction).")
flags.DEFINE_integer("hyperband_factor", 3, "tune: Hyperband's reduction factor.")
flags.DEFINE_boolean("export_best", True, "tune: export the best trial's model at the end.")

# ---- serving (python -m aalp_tf.export, python -m aalp_tf.serving config|predict) -----------
# export also reads --model_dir, --export_dir and --export_name (alias --name); predict reads
# --model as the served model's name.
flags.DEFINE_integer("checkpoint", 0, "export: the epoch whose checkpoint to export (0: the "
                     "latest).")
flags.DEFINE_alias("name", "export_name")
flags.DEFINE_integer("version", None, "export: the version folder to write (default: one past "
                     "the highest present); predict: the version to ask for (default: latest).")
flags.DEFINE_list("warmup_batch_sizes", ["1"], "export: a TF Serving warm-up request per "
                  "signature and batch size (empty: no warm-up file).")
flags.DEFINE_string("base_path", None, "serving config: the export folder as the server sees it "
                    "(default: its absolute path; /models inside the tensorflow/serving image).")
flags.DEFINE_string("server", None, "predict: HOST:PORT of TF Serving (default localhost:8500, "
                    "with --rest localhost:8501).")
flags.DEFINE_string("images", None, "predict: .npy file of images [N, H, W, C], float in [0, 1] "
                    "or uint8.")
flags.DEFINE_boolean("rest", False, "predict: REST (POST /v1/models/NAME:predict) instead of "
                     "gRPC.")
flags.DEFINE_enum("signature", "auto", ["auto"] + SIGNATURES.names(), "predict: the signature; "
                  "auto: predict_uint8 for uint8 images, else serving_default.")
flags.DEFINE_float("timeout", 10.0, "predict: seconds to wait for the server.")

# ---- compare (python -m aalp_tf.compare; issue 14) ---------------------------------------------
# compare also reads every training flag (the base run of each cell), --attacks, --test_examples,
# --restarts, --checks, --check_examples (as evaluate does) and --out.
import shlex  # noqa: E402

from aalp_tf.comparison import config as comparison_config  # noqa: E402

flags.DEFINE_list("methods", [], "compare: the methods, comma-separated; cells run method-major "
                  "in this order.")
flags.DEFINE_list("seeds", ["0"], "compare: the training seeds, comma-separated (the same seed: "
                  "the same data order and initial weights for every method).")
flags.DEFINE_string("baseline", "", "compare: the method the others are compared with, paired "
                    "by seed (default: the first of --methods).")
flags.DEFINE_list("attack_examples", [], "compare: NAME:N,... evaluates these attacks on the "
                  "first N test images only (N <= --test_examples), e.g. autoattack1000:1000.")
flags.DEFINE_float("eval_step_size", None, "compare: the evaluation's PGD/CW step (default: the "
                   "dataset's paper step from flags/<dataset>.cfg, what evaluate uses); "
                   "--step_size is the training adversary's.")
flags.DEFINE_integer("eval_seed", 0, "compare: seed of the evaluation's random starts (the "
                     "training seeds are --seeds).")
flags.DEFINE_string("work_dir", None, "compare: run folders and exports, a folder per cell "
                    "(default: <out>/work).")
flags.DEFINE_boolean("list_cells", False, "compare: print one line per cell, K<TAB>method<TAB>"
                     "seed<TAB>status, and exit.")
flags.DEFINE_integer("cell", None, "compare: run only cell K of --list_cells (one index of a job "
                     "array), then refresh the outputs from the finished cells.")

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
                               steps=_required("attack_steps"),
                               warmup_epochs=FLAGS.epsilon_warmup_epochs)


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
                               jit_compile=FLAGS.jit_compile, strategy=FLAGS.strategy,
                               mixed_precision=FLAGS.mixed_precision,
                               val_attack_steps=FLAGS.val_attack_steps,
                               keep_checkpoints=FLAGS.keep_checkpoints,
                               export_dir=FLAGS.export_dir, export_name=FLAGS.export_name,
                               analysis_probe=FLAGS.analysis_probe)
    model = cfglib.ModelConfig(name=architecture, width=FLAGS.width,
                               keep_fraction=FLAGS.keep_fraction, gd_rescale=FLAGS.gd_rescale,
                               sync_batchnorm=FLAGS.sync_batchnorm)
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
        known_methods=METHODS.names())


# ---- running a command -------------------------------------------------------------------


def run(main) -> None:
    """absl's app.run with our flag parser; UsageError and Ctrl-C end in one line, no traceback."""

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

    app.run(guarded, flags_parser=parse_flags)


def reject_positional(argv) -> None:
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}; every option is a --flag "
                         "(see --helpshort)")
