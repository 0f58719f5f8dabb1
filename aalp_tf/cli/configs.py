"""Flags -> the frozen configs, once per command (code below the CLI never reads FLAGS).

A config field takes the flag of the same name (`from_flags`), or the one FLAG_OF names; a list
flag becomes a tuple. A new field with a flag of its own name needs nothing here: define the
flag in cli.table for the commands that read it.
"""
import dataclasses
import os
import pathlib
import shlex
import sys

from aalp_tf import config as cfglib
from aalp_tf import paper
from aalp_tf.analysis import config as analysis_config
from aalp_tf.cli.table import FLAGS, every_flag
from aalp_tf.comparison import config as comparison_config
from aalp_tf.serving import config as serving_config
from aalp_tf.tuning import config as tuning_config
from aalp_tf.errors import UsageError

# (config class, field) -> the flag it comes from, where the names differ.
FLAG_OF = {
    (cfglib.ModelConfig, "name"): "backbone",
    (cfglib.MethodConfig, "name"): "method",
    (cfglib.AttackConfig, "steps"): "attack_steps",
    (cfglib.AttackConfig, "warmup_epochs"): "epsilon_warmup_epochs",
    (cfglib.EvalConfig, "output"): "output_file",
    (analysis_config.AnalysisConfig, "out"): "output_dir",
    (serving_config.ExportConfig, "name"): "export_name",
    (serving_config.PredictConfig, "model"): "model_name",
    (comparison_config.CompareConfig, "out"): "output_dir",
    (comparison_config.CompareConfig, "work_dir"): "runs_dir",
}


def from_flags(kind, **given):
    """kind(...) with every field that has a flag taken from it, but those in `given`."""
    values = {}
    for field in dataclasses.fields(kind):
        flag = FLAG_OF.get((kind, field.name), field.name)
        if field.name in given:
            values[field.name] = given[field.name]
        elif flag in every_flag():
            value = FLAGS[flag].value
            values[field.name] = tuple(value) if isinstance(value, list) else value
    return kind(**values)


def required(name: str):
    value = FLAGS[name].value
    if value is None and name == "dataset":  # no paper settings to point to without it
        from aalp_tf.data.datasets import DATASETS

        raise UsageError(f"--dataset is not set; accepted: {', '.join(DATASETS.names())}")
    if value is None:
        if name in ("epsilon", "step_size") and FLAGS["norm"].value != "linf":
            raise UsageError(f"--{name} is not set: the paper's settings are L-inf, so "
                             f"--norm={FLAGS['norm'].value} needs it; accepted: e.g. "
                             "--epsilon=2 --step_size=0.25 on MNIST, --epsilon=0.5 "
                             "--step_size=0.1 on CIFAR-10")
        raise UsageError(f"--{name} is not set: pass it, or a --dataset whose paper settings "
                         f"(aalp_tf.paper) give it")
    return value


def data_config() -> cfglib.DataConfig:
    return from_flags(cfglib.DataConfig, dataset=required("dataset"),
                      augment={"auto": None, "on": True, "off": False}[FLAGS.augment])


def attack_config(steps=None) -> cfglib.AttackConfig:
    return from_flags(cfglib.AttackConfig, epsilon=required("epsilon"),
                      step_size=required("step_size"),
                      steps=required("attack_steps") if steps is None else steps)


def config_from_flags() -> cfglib.RunConfig:
    """The training config, validated (registry names were checked by cli.runner, after the
    modules in --imports had registered theirs)."""
    from aalp_tf.data.datasets import DATASETS
    from aalp_tf.models import check_options

    data = data_config()
    backbone = FLAGS.backbone
    if backbone == "auto":
        backbone = DATASETS.get(data.dataset).default_model
    check_options(backbone, depth=FLAGS.depth, widen_factor=FLAGS.widen_factor)
    method = from_flags(cfglib.MethodConfig)
    model_dir = FLAGS.model_dir or os.path.join("runs", f"{data.dataset}_{method.name}")
    train = from_flags(cfglib.TrainConfig, epochs=required("epochs"),
                       learning_rate=required("learning_rate"), model_dir=model_dir)
    return (cfglib.RunConfig(
        data=data, model=from_flags(cfglib.ModelConfig, name=backbone), method=method,
        attack=attack_config(), train=train))


def eval_config_from_flags() -> cfglib.EvalConfig:
    """The evaluation config, validated."""
    if not FLAGS.model:
        raise UsageError("--model is not set: pass a SavedModel folder or a .keras file, e.g. "
                         "--model=saved_models/mnist_aalp/1")
    own_data = bool(FLAGS.images or FLAGS.labels or FLAGS.data)
    data = (from_flags(cfglib.DataConfig, dataset=FLAGS.dataset or "") if own_data
            else data_config())
    # The one step rule (evaluation.robustness.step_size_rule, the library's too): --step_size,
    # else the paper's for --dataset (cli.runner filled it in), else epsilon / 4. evaluate has no
    # --attack_steps: each attack's steps are in its name (pgd40).
    epsilon = required("epsilon")
    step = FLAGS.step_size if FLAGS.step_size is not None else epsilon / 4
    attack = from_flags(cfglib.AttackConfig, epsilon=epsilon, step_size=step, steps=1)
    return from_flags(cfglib.EvalConfig, data=data, attack=attack, data_file=FLAGS.data)


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


def analysis_config_from_flags() -> analysis_config.AnalysisConfig:
    """The analysis config, validated."""
    return (from_flags(
        analysis_config.AnalysisConfig,
        models=tuple(_labelled_path(item) for item in FLAGS.models), data=data_config(),
        attack=attack_config()))


def _float_pair(name: str) -> tuple:
    raw = FLAGS[name].value
    try:
        return tuple(float(item) for item in raw)
    except ValueError:
        raise UsageError(f"--{name} must be two numbers LOW,HIGH; received: "
                         f"{','.join(raw)}") from None


def tune_config_from_flags() -> tuning_config.TuneConfig:
    """The search config, validated; the search folder defaults to runs/<dataset>_<method>_tune."""
    run = config_from_flags()
    if FLAGS.model_dir is None:
        folder = os.path.join("runs", f"{run.data.dataset}_{run.method.name}_tune")
        run = run.replace(train=dataclasses.replace(run.train, model_dir=folder))
    return (from_flags(
        tuning_config.TuneConfig, run=run, alpha_range=_float_pair("alpha_range"),
        learning_rate_range=_float_pair("learning_rate_range") if FLAGS.tune_learning_rate
        else None,
        keep_fraction_range=_float_pair("keep_fraction_range") if FLAGS.tune_keep_fraction
        else None))


def _int_list(name: str) -> tuple:
    raw = FLAGS[name].value
    cfglib.check(all(item.strip().isdigit() for item in raw), f"--{name} must be integers, "
                 f"comma-separated; received: {','.join(raw)}")
    return tuple(int(item) for item in raw)


def export_config_from_flags() -> serving_config.ExportConfig:
    """The export config, validated; --export_dir counts only when given (else the run's)."""
    if not FLAGS.model_dir:
        raise UsageError("--model_dir is not set: pass the run folder to export, e.g. "
                         "--model_dir=runs/mnist_aalp")
    return (from_flags(
        serving_config.ExportConfig,
        export_dir=FLAGS.export_dir if FLAGS["export_dir"].present else None,
        warmup_batch_sizes=_int_list("warmup_batch_sizes")))


def predict_config_from_flags() -> serving_config.PredictConfig:
    """The client's request, validated."""
    server = FLAGS.server or ("localhost:8501" if FLAGS.rest else "localhost:8500")
    return (from_flags(
        serving_config.PredictConfig, server=server, model=FLAGS.model_name or "",
        images=FLAGS.images or ""))


def compare_config_from_flags() -> comparison_config.CompareConfig:
    """The study's config, validated: each cell's base run is exactly `train`'s config, and the
    evaluation's step is the paper's unless --eval_step_size says otherwise."""
    from aalp_tf.methods import METHODS  # after --imports: the user's methods count

    if not FLAGS["output_dir"].present or not FLAGS.output_dir:  # its default is analyze's
        raise UsageError("--output_dir is not set: pass the study's folder, e.g. "
                         "--output_dir=benchmarks/results/mnist_seeds")
    run = config_from_flags()
    step = FLAGS.eval_step_size
    if step is None:
        step = paper.paper_settings(run.data.dataset).get("step_size")
    if step is None:
        raise UsageError(f"--eval_step_size is not set and the paper gives no step for "
                         f"--dataset={run.data.dataset}; accepted: --eval_step_size in (0, 1]")
    methods = tuple(m.strip() for m in FLAGS.methods)
    out = comparison_config.absolute(FLAGS.output_dir)
    # The study's command, as summary.md shows it whichever cell's process writes it last.
    shown = [arg for arg in sys.argv[1:] if not arg.startswith(("--cell=", "--list_cells"))]
    return comparison_config.validate_compare(from_flags(
        comparison_config.CompareConfig, run=run, methods=methods,
        seeds=comparison_config.parse_seeds(FLAGS.seeds),
        baseline=FLAGS.baseline or (methods[0] if methods else ""),
        attacks=tuple(a.strip().lower() for a in FLAGS.attacks),
        attack_examples=comparison_config.parse_attack_examples(FLAGS.attack_examples),
        eval_step_size=float(step), out=out,
        work_dir=comparison_config.absolute(FLAGS.runs_dir or os.path.join(out, "work")),
        command=shlex.join(["python", "-m", "aalp_tf.compare", *shown])),
        known_methods=METHODS.names())
