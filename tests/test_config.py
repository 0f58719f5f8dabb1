"""The configs check their settings when constructed: every float setting refuses NaN, ±inf and
absurd values, every integer setting its impossible values, each in one exact line (the commands
print it after `error: `)."""
import dataclasses

import pytest

from aalp_tf import config
from aalp_tf.analysis.config import AnalysisConfig
from aalp_tf.config import AttackConfig, EvalConfig
from aalp_tf.serving.config import ExportConfig, PredictConfig
from aalp_tf.tuning.config import TuneConfig
from aalp_tf.errors import UsageError
from tests.helpers.tiny import tiny_config

INF, NAN = float("inf"), float("nan")


def run_with(part: str, **values):
    cfg = tiny_config("run")
    return cfg.replace(**{part: dataclasses.replace(getattr(cfg, part), **values)})


def refused(make) -> str:
    """The one-line message constructing a config with `make()` is refused with."""
    with pytest.raises(UsageError) as err:
        make()
    return str(err.value)


@pytest.mark.parametrize("part,field,value,expected", [
    ("train", "learning_rate", INF, "--learning_rate must be in (0, 1]; received: inf"),
    ("train", "learning_rate", NAN, "--learning_rate must be in (0, 1]; received: nan"),
    ("train", "learning_rate", -INF, "--learning_rate must be in (0, 1]; received: -inf"),
    ("train", "learning_rate", 5.0, "--learning_rate must be in (0, 1]; received: 5.0"),
    ("method", "alpha", INF, "--alpha must be in [0, 1000]; received: inf"),
    ("method", "alpha", NAN, "--alpha must be in [0, 1000]; received: nan"),
    ("method", "alpha", 1e30, "--alpha must be in [0, 1000]; received: 1e+30"),
    ("method", "alpha", -1.0, "--alpha must be in [0, 1000]; received: -1.0"),
    ("method", "trades_beta", INF, "--trades_beta must be in [0, 1000]; received: inf"),
    ("method", "trades_beta", NAN, "--trades_beta must be in [0, 1000]; received: nan"),
    ("attack", "epsilon", INF, "--epsilon must be in (0, 1] (pixel units, e.g. 0.3 or 8/255); "
                               "received: inf"),
    ("attack", "epsilon", NAN, "--epsilon must be in (0, 1] (pixel units, e.g. 0.3 or 8/255); "
                               "received: nan"),
    ("attack", "step_size", NAN, "--step_size must be in (0, 1]; received: nan"),
    ("attack", "warmup_epochs", INF, "--epsilon_warmup_epochs must be in [0, --epochs=1]; "
                                     "received: inf"),
    ("attack", "warmup_epochs", NAN, "--epsilon_warmup_epochs must be in [0, --epochs=1]; "
                                     "received: nan"),
    ("model", "keep_fraction", NAN, "--keep_fraction must be in (0, 1]; received: nan"),
    ("model", "keep_fraction", INF, "--keep_fraction must be in (0, 1]; received: inf"),
])
def test_a_run_refuses_non_finite_and_absurd_floats(part, field, value, expected):
    assert refused(lambda: run_with(part, **{field: value})) == expected


@pytest.mark.parametrize("part,values,expected", [
    ("train", {"val_attack_steps": -1},
     "--val_attack_steps must be an integer >= 0 (0: --attack_steps); received: -1"),
    ("train", {"keep_checkpoints": -1},
     "--keep_checkpoints must be an integer >= 0 (0: all); received: -1"),
    ("train", {"seed": -1}, "--seed must be an integer >= 0; received: -1"),
    # --epochs is checked before the warm-up, whose range it sets.
    ("train", {"epochs": -1}, "--epochs must be an integer >= 1; received: -1"),
    ("train", {"epochs": 2.5}, "--epochs must be an integer >= 1; received: 2.5"),
    ("data", {"batch_size": 0}, "--batch_size must be an integer >= 1; received: 0"),
    ("data", {"val_examples": -1}, "--val_examples must be an integer >= 0 (0 means all); "
                                   "received: -1"),
    ("model", {"width": -4}, "--width must be an integer >= 0 (0: the architecture's default); "
                             "received: -4"),
    ("data", {"batch_size": 2 ** 40},
     "--batch_size must be at most 2147483647 in size; received: 1099511627776"),
    ("attack", {"steps": 2 ** 31}, "--attack_steps must be at most 2147483647 in size; "
                                   "received: 2147483648"),
    ("train", {"seed": 2 ** 32}, "--seed must be at most 2147483647 in size; received: "
                                 "4294967296"),
])
def test_a_run_refuses_impossible_integers(part, values, expected):
    assert refused(lambda: run_with(part, **values)) == expected


def test_the_bounds_themselves_are_accepted():
    cfg = run_with("method", alpha=1000.0, trades_beta=0.0)
    cfg = cfg.replace(train=dataclasses.replace(cfg.train, learning_rate=1.0, seed=2 ** 31 - 1),
                      attack=dataclasses.replace(cfg.attack, epsilon=1.0, step_size=1.0,
                                                 warmup_epochs=1.0))
    assert (cfg.method.alpha, cfg.train.seed, cfg.attack.epsilon) == (1000.0, 2 ** 31 - 1, 1.0)


def test_a_replaced_part_is_checked_against_the_others():
    """RunConfig's own rules relate its parts: a part replaced later is checked again."""
    cfg = tiny_config("run", epochs=2)
    assert refused(lambda: cfg.replace(attack=dataclasses.replace(cfg.attack, warmup_epochs=3))
                   ) == "--epsilon_warmup_epochs must be in [0, --epochs=2]; received: 3"
    assert refused(lambda: cfg.replace(data=dataclasses.replace(cfg.data, val_examples=0))) == (
        "--export_epoch=best picks the epoch by val_robust_accuracy, which needs a validation "
        "slice; received: --val_examples=0; accepted: --val_examples > 0, or --export_epoch=last")
    assert refused(lambda: dataclasses.replace(cfg.train, export_epoch="first")) == (
        "--export_epoch must be one of best, last; received: 'first'")


def tiny_search(**values) -> TuneConfig:
    return TuneConfig(run=tiny_config("search"), **values)


@pytest.mark.parametrize("values,expected", [
    ({"alpha_range": (0.1, INF)}, "--alpha_range's HIGH must be at most 1000, the largest "
                                  "--alpha; received: (0.1, inf)"),
    ({"alpha_range": (NAN, 10.0)}, "--alpha_range must be LOW,HIGH with 0 < LOW < HIGH; "
                                   "received: (nan, 10.0)"),
    ({"learning_rate_range": (1e-5, INF)}, "--learning_rate_range's HIGH must be at most 1, "
                                           "the largest --learning_rate; received: (1e-05, inf)"),
    ({"learning_rate_range": (1e-5, 10.0)}, "--learning_rate_range's HIGH must be at most 1, "
                                            "the largest --learning_rate; received: (1e-05, "
                                            "10.0)"),
    ({"keep_fraction_range": (0.25, NAN)}, "--keep_fraction_range must be LOW,HIGH with "
                                           "0 < LOW < HIGH <= 1.0; received: (0.25, nan)"),
    ({"max_trials": 2 ** 31}, "--max_trials must be at most 2147483647 in size; received: "
                              "2147483648"),
])
def test_a_search_refuses_non_finite_and_absurd_ranges(values, expected):
    assert refused(lambda: tiny_search(**values)) == expected


def test_evaluation_refuses_a_non_finite_step_and_its_own_impossible_settings():
    data = config.DataConfig(dataset="mnist")
    attack = AttackConfig(epsilon=0.3, step_size=0.1, steps=1)
    assert refused(lambda: AttackConfig(epsilon=0.3, step_size=NAN, steps=1)) == (
        "--step_size must be in (0, 1]; received: nan")
    assert refused(lambda: EvalConfig(model="m", data=data, attack=attack, restarts=0)) == (
        "--restarts must be an integer >= 1; received: 0")
    assert refused(lambda: EvalConfig(model="m", data=data, attack=attack, attacks=())) == (
        "--attacks is empty: name at least one, e.g. clean,pgd40")


def test_analysis_refuses_repeated_labels_and_an_unknown_cam_source():
    parts = dict(out="out", data=config.DataConfig(dataset="mnist"),
                 attack=AttackConfig(epsilon=0.3, step_size=0.1, steps=1))
    models = (("a", "runs/a"), ("b", "runs/b"))
    assert refused(lambda: AnalysisConfig(models=models + (("a", "x"),), **parts)) == (
        "--models names a more than once; accepted: distinct labels")
    assert refused(lambda: AnalysisConfig(models=models, cam_source="c", **parts)) == (
        "--cam_source=c is not a model label; accepted: own, a, b")
    assert refused(lambda: AnalysisConfig(models=models, cam_images=33, **parts)) == (
        "--cam_images must be in 1..32; received: 33")


@pytest.mark.parametrize("timeout,expected", [
    (INF, "--timeout must be in (0, 3600] seconds; received: inf"),
    (NAN, "--timeout must be in (0, 3600] seconds; received: nan"),
    (1e9, "--timeout must be in (0, 3600] seconds; received: 1000000000.0"),
])
def test_predict_refuses_a_non_finite_or_absurd_timeout(timeout, expected):
    assert refused(lambda: PredictConfig(server="localhost:8500", model="m", images="x.npy",
                                         timeout=timeout)) == expected


def test_export_refuses_an_impossible_checkpoint():
    assert refused(lambda: ExportConfig(model_dir="run", epoch=2 ** 40)) == (
        "--epoch must be at most 2147483647 in size; received: 1099511627776")
    assert refused(lambda: ExportConfig(model_dir="run", version=0)) == (
        "--version must be an integer >= 1 (unset: the next free one); received: 0")
    assert refused(lambda: ExportConfig(model_dir="run", warmup_batch_sizes=(1, 0))) == (
        "--warmup_batch_sizes must be batch sizes >= 1; received: (1, 0)")
