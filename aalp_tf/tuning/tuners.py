"""Hyperparameter search with KerasTuner over the one training path.

`AdversarialHyperModel.build(hp)` is `training.seeded_model` on the base config with the trial's
values put in (`search_space.trial_config`), and its `fit` is `training.train` on that model, so
a trial trains exactly as `python -m aalp_tf.train` would with those flags. Each trial has its
own run folder (`<model_dir>/tuner/trial_<id>/run/`), so a trial cut short resumes after its
last completed epoch, and the best one is reloaded from its folder and exported by `train`.

What we change in KerasTuner's behaviour (1.4.8, Keras 3), and why:
- A failing trial is printed when it ends (its error's last line) and listed in the table; the
  search goes on (one diverging α must not end it) and `tune` exits non-zero when no trial
  completed. KerasTuner would retry it silently and stop after 3 failures in a row.
- KerasTuner imports tensorboard's hparams plugin in every trial; without tensorboard every
  trial fails and the search still "finishes". We check it once, up front.
- A trial is scored by the epoch it exports (--export_epoch: by default the one with the best
  validation robust accuracy), not by KerasTuner's own choice of epoch.
- `get_best_models()` loads weights into a freshly built model; ours rebuilds the trial's model
  from its run folder (runs.model_from_run) at the epoch it exports, the state that was scored.
  Ties between trials go to the earlier trial everywhere (KerasTuner's order after a reload is
  the file system's).
- The space has no conditional hyperparameters, so the start-up builds KerasTuner makes to
  discover them (a whole model each, even on the chief, which never trains) are skipped.
"""
import dataclasses
import importlib
import json
import os
import pathlib
import shutil
import sys
import time
from typing import Callable, Optional

import keras_tuner

from aalp_tf.experiment import training
from aalp_tf.tuning import report, search_space
from aalp_tf.config import check, differences
from aalp_tf.tuning.config import TuneConfig
from aalp_tf.data.datasets import DATASETS, load_arrays, split_sizes
from aalp_tf.errors import UsageError
from aalp_tf import runs
from aalp_tf.registry import Registry
from aalp_tf.files import atomic_folder, write_atomically
from aalp_tf.runs import RunFolder

PROJECT = "tuner"  # KerasTuner's folder under --model_dir
_CHIEF_WAIT_SECONDS = 120
_NEVER = sys.maxsize  # max_consecutive_failed_trials: we report failures instead
COMPLETED = "COMPLETED"  # KerasTuner's TrialStatus of a trial that reported its metrics
# Fields a resumed search may change: its length and file locations.
_MAY_CHANGE = {"max_trials", "export_best", "run.data.source_dir", "run.data.data_dir",
               "run.train.export_dir", "run.train.keep_checkpoints",
               "run.train.model_dir"}  # the search folder itself, however its path is spelled


def require(module: str, *, need: str, package: str) -> None:
    """Fails in one line, before any trial, when `module` does not import."""
    try:
        importlib.import_module(module)
    except ImportError as err:
        raise UsageError(f"{need}, and it does not import ({err}); accepted: pip install "
                         f"{package}") from None


def check_tensorboard() -> None:
    """KerasTuner imports tensorboard's hparams plugin in every trial, whatever the callbacks."""
    require("tensorboard.plugins.hparams.api", need="KerasTuner needs tensorboard in every trial",
            package="tensorboard")


def distributed_role() -> str:
    """single, chief or worker, from KerasTuner's KERASTUNER_* environment variables."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "single"
    missing = [name for name in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID")
               if not os.environ.get(name)]
    check(not missing, f"KERASTUNER_ORACLE_IP is set but not {' and '.join(missing)}; "
          "accepted: all three, e.g. KERASTUNER_TUNER_ID=chief (or worker0), "
          "KERASTUNER_ORACLE_IP=10.0.0.1, KERASTUNER_ORACLE_PORT=8000")
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


def wait_for_chief(seconds: float = _CHIEF_WAIT_SECONDS) -> None:
    """A worker's first call would wait an hour for a chief that is not there; say so sooner."""
    import grpc

    address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
    channel = grpc.insecure_channel(address)
    try:
        grpc.channel_ready_future(channel).result(timeout=seconds)
    except grpc.FutureTimeoutError:
        raise UsageError(f"no chief oracle answered at {address} within {seconds:.0f} s; "
                         "accepted: a running chief (KERASTUNER_TUNER_ID=chief) at that "
                         "KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT") from None
    finally:
        channel.close()


def trial_run_dir(project_dir, trial_id: str) -> pathlib.Path:
    return pathlib.Path(project_dir) / f"trial_{trial_id}" / "run"


class SearchFolder:
    """Paths of one search (`--model_dir`), and the check that a rerun continues it."""

    def __init__(self, root: str):
        self.root = pathlib.Path(root)
        self.config_path = self.root / "tune_config.json"
        self.tuner = self.root / PROJECT
        self.trials_csv = self.root / "trials.csv"
        self.plot = self.root / "alpha.png"
        self.best = self.root / "best.json"

    def trial_run(self, trial_id: str) -> pathlib.Path:
        return trial_run_dir(self.tuner, trial_id)

    def check_continues(self, cfg: TuneConfig) -> None:
        """Refuses settings other than those of the search already in the folder."""
        if not self.config_path.exists():
            return
        try:
            recorded = json.loads(self.config_path.read_text())
        except ValueError:
            raise UsageError(f"{self.config_path} is not valid JSON; move {self.root} away or "
                             "pass another --model_dir") from None
        # Through JSON, so tuples compare equal to the lists the file holds.
        changed = differences(recorded, json.loads(json.dumps(dataclasses.asdict(cfg))),
                              may_change=_MAY_CHANGE)
        if changed:
            raise UsageError(f"--model_dir {self.root} holds a search with other settings "
                             f"({'; '.join(changed[:3])}); accepted: the same settings to "
                             "resume it (--max_trials may grow), or a new --model_dir")

    def write_config(self, cfg: TuneConfig) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomically(self.config_path, json.dumps(dataclasses.asdict(cfg), indent=2))


class AdversarialHyperModel(keras_tuner.HyperModel):
    """build(hp) is the trainer's model, fit is the trainer's `train`, with the trial's values.

    Args:
      cfg: the search.
      arrays: the dataset in memory (read once per process), or None to read it per trial.
    """

    def __init__(self, cfg: TuneConfig, arrays=None):
        super().__init__(name=f"{cfg.run.data.dataset}_{cfg.run.method.name}")
        self.cfg = cfg
        self.arrays = arrays
        self.spec = DATASETS.get(cfg.run.data.dataset)

    def declare_hyperparameters(self, hp):
        search_space.declare(hp, self.cfg)

    def build(self, hp):
        run_cfg = search_space.trial_config(self.cfg, search_space.declare(hp, self.cfg))
        # The chief holds no data and trains nothing: its models need no warm-up length.
        steps = split_sizes(run_cfg.data, self.arrays).steps_per_epoch if self.arrays else 0
        return training.seeded_model(run_cfg, self.spec, steps_per_epoch=steps)

    def fit(self, hp, model, *args, run_dir, callbacks=(), progress="auto", **kwargs):
        """Trains `model` with `training.train` in the trial's run folder.

        Returns the metrics of the epoch the run exports and the objective, as KerasTuner
        expects, so a trial is scored by the model it would export. Hyperband's
        `epochs`/`initial_epoch` arrive in kwargs and in hp (`tuner/epochs`); the run folder
        knows the epochs already done, so only the latter is read.
        """
        values = dict(hp.values, **search_space.declare(hp, self.cfg))
        run_cfg = search_space.trial_config(self.cfg, values, model_dir=str(run_dir))
        result = training.train(run_cfg, arrays=self.arrays, callbacks=list(callbacks),
                                verbose=progress, export_model=False, model=model)
        logs = {k: float(v) for k, v in result.export_logs.items() if k != "epoch"}
        objective = search_space.OBJECTIVES.get(self.cfg.objective)
        logs[objective.metric] = objective.value(logs)
        return logs


def _continue_from(source: pathlib.Path, target: pathlib.Path) -> None:
    """Hyperband's next round of a trial: start its run folder from the previous round's.

    The checkpoint (model, optimizer, epoch) and history are copied, not the config (its
    folder and epochs differ), so `train` resumes after the epochs already done.
    """
    target_run, source_run = RunFolder(str(target)), RunFolder(str(source))
    if target_run.checkpoints.exists() or not source_run.checkpoints.exists():
        return
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source_run.history_path, target_run.history_path)
    with atomic_folder(target_run.checkpoints) as staging:  # whole or absent, if killed
        shutil.copytree(source_run.checkpoints, staging, dirs_exist_ok=True)


class TrialsInRunFolders:
    """Mixed into KerasTuner's tuners: trials in run folders, failures reported, best reloaded."""

    def _populate_initial_space(self):
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def on_search_begin(self):
        self.ended = []  # (trial id, status) of the trials this process ran
        super().on_search_begin()

    def run_trial(self, trial, *args, **kwargs):
        run_dir = trial_run_dir(self.project_dir, trial.trial_id)
        previous = trial.hyperparameters.values.get("tuner/trial_id")
        if previous:
            _continue_from(trial_run_dir(self.project_dir, previous), run_dir)
        results = super().run_trial(trial, *args, run_dir=run_dir, **kwargs)
        self.last_logs = results[-1]
        return results

    def on_trial_begin(self, trial):
        self.last_logs, self.trial_start = {}, time.time()
        values = " ".join(f"{k}={v:.4g}" for k, v in sorted(trial.hyperparameters.values.items())
                          if isinstance(v, float))
        print(f"trial {trial.trial_id} started by {self.tuner_id}: {values}", flush=True)
        super().on_trial_begin(trial)

    def on_trial_end(self, trial):
        seconds = time.time() - self.trial_start
        if trial.status == COMPLETED:
            shown = " ".join(f"{k}={v:.4f}" for k, v in sorted(self.last_logs.items())
                             if k.startswith("val_"))
            print(f"trial {trial.trial_id} COMPLETED in {seconds:.0f} s: {shown}", flush=True)
        else:
            # The chief gets the trial without its message over gRPC: leave it on disk too.
            trial_dir = pathlib.Path(self.get_trial_dir(trial.trial_id))
            (trial_dir / report.FAILURE_FILE).write_text(trial.message or "")
            print(f"trial {trial.trial_id} FAILED in {seconds:.0f} s: "
                  f"{report.last_line(trial.message)}", file=sys.stderr, flush=True)
        self.ended.append((trial.trial_id, trial.status))
        super().on_trial_end(trial)

    def ranked_trials(self) -> list:
        """The completed trials, best first (report.rank); on the chief or alone."""
        done = [t for t in self.oracle.trials.values() if t.status == COMPLETED]
        return sorted(done, key=lambda t: report.rank(t.trial_id, t.score))

    def get_best_hyperparameters(self, num_trials=1):
        return [trial.hyperparameters for trial in self.ranked_trials()[:num_trials]]

    def get_best_models(self, num_models=1):
        return [self.load_model(trial) for trial in self.ranked_trials()[:num_models]]

    def load_model(self, trial):
        """The trial's model at the epoch its run exports: what was scored."""
        run_dir = str(trial_run_dir(self.project_dir, trial.trial_id))
        return runs.model_from_run(run_dir, epoch=runs.chosen_epoch(run_dir)).model


class RandomSearch(TrialsInRunFolders, keras_tuner.RandomSearch):
    """KerasTuner's random search, trials in run folders."""


class BayesianOptimization(TrialsInRunFolders, keras_tuner.BayesianOptimization):
    """KerasTuner's Bayesian optimisation (Gaussian process), trials in run folders."""


class Hyperband(TrialsInRunFolders, keras_tuner.Hyperband):
    """KerasTuner's Hyperband; a trial's next round resumes the previous round's run folder."""


# --tuner -> (cfg, **KerasTuner's common arguments) -> the tuner.
TUNERS: Registry[Callable] = Registry("tuner")
TUNERS.add("random", lambda cfg, **common: RandomSearch(
    max_trials=cfg.max_trials, seed=cfg.run.train.seed, **common))
TUNERS.add("hyperband", lambda cfg, **common: Hyperband(
    max_epochs=cfg.run.train.epochs, factor=cfg.hyperband_factor, seed=cfg.run.train.seed,
    **common))


@TUNERS.register("bayesian")
def _bayesian(cfg: TuneConfig, **common):
    require("sklearn", need="--tuner=bayesian needs scikit-learn (KerasTuner's Gaussian "
            "process)", package="scikit-learn")
    return BayesianOptimization(max_trials=cfg.max_trials, seed=cfg.run.train.seed, **common)


@dataclasses.dataclass
class SearchResult:
    """What a search leaves.

    Attributes:
      rows: one dict per trial (report.COLUMNS); on a worker, the id and status of
        each trial it ran.
      best: best.json's content (None on a worker, or when no trial completed or
        export_best is off).
      tuner: the KerasTuner tuner (e.g. for get_best_models).
    """

    rows: list
    best: Optional[dict]
    tuner: object


def make_tuner(cfg: TuneConfig, *, arrays=None):
    """The tuner of the search in cfg.run.train.model_dir, reloaded if it exists."""
    objective = search_space.OBJECTIVES.get(cfg.objective)
    tuner = TUNERS.get(cfg.tuner)(
        cfg, hypermodel=AdversarialHyperModel(cfg, arrays),
        objective=keras_tuner.Objective(objective.metric, direction="max"),
        directory=str(cfg.run.train.model_dir), project_name=PROJECT, overwrite=False,
        max_retries_per_trial=0, max_consecutive_failed_trials=_NEVER)
    tuner.oracle.verbose = 0  # our own lines replace KerasTuner's ("Complete" even on failure)
    return tuner


def search(cfg: TuneConfig, *, arrays=None, callbacks=(), progress="auto") -> SearchResult:
    """Runs (or resumes) the search; on the chief or alone, writes the results and exports.

    Args:
      cfg: the validated search config.
      arrays: the dataset in memory (tests); None reads cfg.run.data once.
      callbacks: extra Keras callbacks for every trial (deep-copied per trial).
      progress: Keras' progress display in each trial's fit.
    """
    check_tensorboard()
    search_space.check_searchable(cfg)
    role = distributed_role()
    folder = SearchFolder(cfg.run.train.model_dir)
    folder.check_continues(cfg)
    folder.write_config(cfg)
    if role == "worker":
        wait_for_chief()
    if arrays is None and role != "chief":  # the chief only hands out trials
        data = cfg.run.data
        arrays = load_arrays(data.dataset, source_dir=data.source_dir, data_dir=data.data_dir)
    tuner = make_tuner(cfg, arrays=arrays)
    if role == "chief":
        print(f"chief: serving the search's trials at {os.environ['KERASTUNER_ORACLE_IP']}:"
              f"{os.environ['KERASTUNER_ORACLE_PORT']} until the workers have run them",
              flush=True)
    tuner.search(callbacks=list(callbacks), progress=progress)
    if role == "worker":
        rows = [{"trial": trial_id, "status": status} for trial_id, status in tuner.ended]
        return SearchResult(rows=rows, best=None, tuner=tuner)
    rows = report.trial_rows(tuner.oracle.trials.values(), cfg, folder)
    report.write(rows, cfg, folder)
    best = export_best(tuner, cfg, folder, arrays, progress) if cfg.export_best else None
    return SearchResult(rows=rows, best=best, tuner=tuner)


def export_best(tuner, cfg: TuneConfig, folder: SearchFolder, arrays,
                progress) -> Optional[dict]:
    """Reloads the best trial's run (or retrains it, where its folder is not on this host)
    through `training.train`, which exports it once; records it in best.json."""
    best = tuner.ranked_trials()
    if not best:
        return None
    trial = best[0]
    run_cfg = search_space.trial_config(cfg, trial.hyperparameters.values,
                                        model_dir=str(folder.trial_run(trial.trial_id)))
    result = training.train(run_cfg, arrays=arrays, verbose=progress)
    record = {"trial": trial.trial_id, "score": float(trial.score),
              "objective": tuner.oracle.objective.name,
              "values": dict(trial.hyperparameters.values),
              "run_dir": str(result.run_dir), "export": str(result.export_path)}
    write_atomically(folder.best, json.dumps(record, indent=2))
    print(f"best trial {trial.trial_id}: {record['objective']}={trial.score:.4f}; "
          f"exported {result.export_path}")
    return record
