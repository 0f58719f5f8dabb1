"""The run folder: resolved config, per-epoch checkpoints, history, and resuming after a kill.

Layout of `--model_dir`:
    config.json        the resolved RunConfig (written once; a rerun must match it)
    checkpoints/       tf.train checkpoints of model + optimizer + epoch, one per epoch: the last
                       --keep_checkpoints, and the epoch --export_epoch=best exports
    history.json       one entry of logged metrics per completed epoch
    logs/              TensorBoard event files
    export.json        where the final SavedModel went, which epoch it holds and why

A checkpoint is written before the history that names its epoch, and both are replaced
atomically, so a kill at any moment (kill -9 included) leaves the folder at the last completed
epoch. The data order and every random start are functions of (seed, epoch, step), so a resumed
run computes what an uninterrupted one would have.
"""
import dataclasses
import json
import math
import os
import pathlib
import re
import shutil
from typing import Dict, List, NamedTuple, Optional, Tuple

import keras
import tensorflow as tf

from aalp_tf import distribution
from aalp_tf.config import RunConfig
from aalp_tf.errors import TrainingDiverged, UsageError
from aalp_tf.files import write_atomically, writer_gone
from aalp_tf.registry import Registry
from aalp_tf.trainer import build_model

# Fields that may change between a run and its continuation: more epochs, other file locations.
_MAY_CHANGE = {"train.epochs", "data.source_dir", "data.data_dir", "train.export_dir",
               "train.keep_checkpoints",
               "train.export_epoch",  # only which epoch is exported
               "train.analysis_probe",  # the probe only reads the model
               "train.strategy",  # a run may resume on another machine
               "train.model_dir"}  # the folder itself, however the command spells its path


def remove_stale_temporaries(run: "RunFolder") -> List[pathlib.Path]:
    """Removes what a write killed half-way leaves in a run folder: our own `.NAME.tmp-HOST-PID`
    files whose writer is gone, and TensorFlow's checkpoint temporaries (`ckpt-N_temp/`,
    `checkpoint.tmp*`), which a finished save never leaves behind. Returns what it removed."""
    removed = [p for p in run.root.glob(".*.tmp-*") if p.is_file() and writer_gone(p.name)]
    if run.checkpoints.is_dir():
        removed += [p for p in run.checkpoints.glob("*_temp") if p.is_dir()]
        removed += [p for p in run.checkpoints.glob("checkpoint.tmp*") if p.is_file()]
    for path in removed:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return removed


def check_writable(path, *, flag: str, within: bool = False) -> None:
    """Refuses, in one line, a folder this process could not create or write into.

    Nothing is created: the folder, or else the nearest part of its path that exists, must be
    a folder this process may write into; `within` also checks every folder inside it.
    """
    path = existing = pathlib.Path(path)
    while not (existing.exists() or existing.is_symlink()) and existing != existing.parent:
        existing = existing.parent
    folders = [existing]
    if within and existing == path:  # it exists, and so may folders inside it
        folders += [p for p in path.rglob("*") if p.is_dir()]
    for folder in folders:
        if not folder.is_dir():
            raise UsageError(f"{flag} {path}: {folder} is not a folder; accepted: a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UsageError(f"{flag} {path} is not writable ({folder}: permission denied); "
                             "accepted: a folder this user may write into")


def _flat(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_same_settings(path: pathlib.Path, settings: dict, *, may_change, folder: str,
                        kind: str, accepted: str) -> None:
    """Refuses, in one line, settings other than those recorded in `path` (a JSON file).

    Settings are compared field by field (nested dicts as dotted names); the fields in
    `may_change` may differ, and a field the recorded file lacks is not a difference: it did
    not exist when the folder was written, so its default stands.

    Args:
      path: the recorded settings; nothing is checked when it does not exist yet.
      settings: the new settings (a dataclasses.asdict tree).
      may_change: dotted names that may differ.
      folder: the folder the user named (for the message).
      kind: what the folder holds, e.g. "a run".
      accepted: what the user may do instead.
    """
    if not path.exists():
        return
    try:
        old = _flat(json.loads(path.read_text()))
    except ValueError:
        raise UsageError(f"{path} is not valid JSON; move {folder} away or pass another "
                         "folder") from None
    changed = [f"{key}: {old[key]!r} -> {value!r}" for key, value in _flat(settings).items()
               if key in old and old[key] != value and key not in may_change]
    if changed:
        raise UsageError(f"{folder} holds {kind} with other settings ({'; '.join(changed[:3])}"
                         f"); accepted: {accepted}")


class RunFolder:
    """Paths of one run, and the check that a rerun continues the same experiment."""

    def __init__(self, model_dir: str):
        self.root = pathlib.Path(model_dir)
        self.config_path = self.root / "config.json"
        self.checkpoints = self.root / "checkpoints"
        self.history_path = self.root / "history.json"
        self.logs = self.root / "logs"
        self.export_record = self.root / "export.json"

    def check_continues(self, cfg: RunConfig) -> None:
        """Refuses a config that differs from the one already in the folder (except epochs etc.)."""
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"--model_dir {self.root} is a file; accepted: a folder "
                             "(new or holding an earlier run)")
        check_same_settings(self.config_path, dataclasses.asdict(cfg), may_change=_MAY_CHANGE,
                            folder=f"--model_dir {self.root}", kind="a run",
                            accepted="the same settings to resume it, or a new --model_dir")

    def read_config(self) -> RunConfig:
        """The run's config.json, or one line saying the folder holds no run."""
        if not self.config_path.is_file():
            raise UsageError(f"--model_dir {self.root} holds no run (no config.json); accepted: "
                             "a run folder written by python -m aalp_tf.train")
        try:
            return RunConfig.from_json(self.config_path.read_text())
        except json.JSONDecodeError:
            raise UsageError(f"{self.config_path} is not valid JSON; accepted: the config.json "
                             "written by python -m aalp_tf.train") from None

    def epoch_checkpoints(self) -> Dict[int, str]:
        """Epoch -> checkpoint prefix, for every checkpoint the folder still keeps."""
        state = tf.train.get_checkpoint_state(str(self.checkpoints))
        paths = list(state.all_model_checkpoint_paths) if state else []
        found = {}
        for path in paths:
            match = re.search(r"ckpt-(\d+)$", path)
            if match and tf.io.gfile.exists(path + ".index"):
                found[int(match[1])] = path
        return found

    def restore_weights(self, model: keras.Model, epoch: int = 0) -> int:
        """Loads the model's weights of `epoch` (0: the latest checkpoint); returns that epoch.

        The model alone: an export or an analysis has no use for the optimizer's slots, and a
        mixed-precision run's optimizer has another structure than the one build_model makes.
        """
        kept = self.epoch_checkpoints()
        if not kept:
            raise UsageError(f"--model_dir {self.root} has no checkpoint yet; accepted: a run "
                             "folder with at least one completed epoch")
        epoch = epoch or max(kept)
        if epoch not in kept:
            raise UsageError(f"--checkpoint={epoch}: {self.checkpoints} keeps no checkpoint of "
                             f"that epoch; accepted: one of {sorted(kept)}")
        tf.train.Checkpoint(model=model).restore(kept[epoch]).expect_partial(
            ).assert_existing_objects_matched()
        return epoch

    def write_config(self, cfg: RunConfig) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomically(self.config_path, cfg.to_json())

    def read_history(self) -> List[dict]:
        if not self.history_path.exists():
            return []
        return json.loads(self.history_path.read_text())

    def exported(self) -> Optional[dict]:
        if not self.export_record.exists():
            return None
        return json.loads(self.export_record.read_text())


EXPORT_METRIC = "val_robust_accuracy"  # what --export_epoch=best maximises


def export_choice(history: List[dict], rule: str) -> Tuple[int, str]:
    """The epoch a run exports under `rule` ("best" or "last"), and why, in words.

    "best" is the epoch with the highest val_robust_accuracy; among equals (all zero in a run
    still at chance under attack, say) the one with the highest val_clean_accuracy, then the
    later one.
    """
    last = history[-1]
    if rule == "last":
        return last["epoch"], f"the last epoch ({last['epoch']}), as --export_epoch=last asks"
    scored = [entry for entry in history if EXPORT_METRIC in entry]
    if not scored:
        raise UsageError(f"--export_epoch=best picks the epoch by {EXPORT_METRIC}, which this "
                         "run did not log (no validation slice); accepted: --val_examples > 0, "
                         "or --export_epoch=last")
    best = max(scored, key=lambda entry: (entry[EXPORT_METRIC],
                                          entry.get("val_clean_accuracy", 0.0), entry["epoch"]))
    if len(history) == 1:
        return best["epoch"], (f"the only epoch ({best['epoch']}; {EXPORT_METRIC} "
                               f"{best[EXPORT_METRIC]:.4f})")
    if best is last:
        return best["epoch"], (f"the last epoch ({best['epoch']}) has the highest "
                               f"{EXPORT_METRIC} ({best[EXPORT_METRIC]:.4f}) of epochs "
                               f"1-{last['epoch']}")
    return best["epoch"], (
        f"epoch {best['epoch']} has the highest {EXPORT_METRIC} ({best[EXPORT_METRIC]:.4f}) of "
        f"epochs 1-{last['epoch']}; the last epoch has {last[EXPORT_METRIC]:.4f}")


def chosen_epoch(model_dir) -> int:
    """The epoch the run's --export_epoch picks from its history so far: what training exported
    (or will export), and what an export or an analysis of the run folder loads. 0 (the latest
    checkpoint) for "last": after a kill, history.json may not name the latest epoch yet."""
    run = RunFolder(model_dir)
    history = run.read_history() if run.config_path.exists() else []
    if not history or run.read_config().train.export_epoch != "best":
        return 0
    return export_choice(history, "best")[0]


def delete_checkpoint(prefix: str) -> None:
    """Removes one checkpoint's files, the index first: a kill midway leaves data files that
    nothing reads, never an index without its data."""
    tf.io.gfile.remove(prefix + ".index")
    for path in tf.io.gfile.glob(prefix + ".data-*"):
        tf.io.gfile.remove(path)


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves model, optimizer, epoch and history after every epoch; restores the latest on start.

    The history (every epoch's logs) is saved inside the checkpoint, so an epoch and its
    history entry land together, in the checkpoint's own atomic commit; history.json is a
    readable copy, rewritten from the checkpoint whenever it lags (a kill between the two).

    Of the older checkpoints it keeps the last `keep` and, with export_epoch="best", the best
    epoch's, wherever it lies: the manager keeps every checkpoint and `prune` deletes the rest,
    since tf.train.CheckpointManager cannot spare one outside its window. Its state file may
    then still name deleted checkpoints; RunFolder.epoch_checkpoints reads only those whose
    files exist.

    Args:
      run: the RunFolder.
      model: the (built and compiled) model.
      keep: checkpoints to keep (0: all).
      export_epoch: "best" or "last", the run's --export_epoch.
    """

    def __init__(self, run: RunFolder, model: keras.Model, keep: int = 5,
                 export_epoch: str = "last"):
        super().__init__()
        self.run = run
        self.keep, self.export_epoch = keep, export_epoch
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.history_json = tf.Variable("[]", dtype=tf.string, trainable=False, name="history")
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer,
                                              epoch=self.epoch, history=self.history_json)
        # Checkpoints written before the history joined them hold everything else.
        self.legacy = tf.train.Checkpoint(model=model, optimizer=model.optimizer,
                                          epoch=self.epoch)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(run.checkpoints),
                                                  max_to_keep=None)
        self.history: List[dict] = []

    def _load(self, path: str) -> int:
        """Restores checkpoint `path` and its history; returns its epoch."""
        names = {name for name, _ in tf.train.list_variables(path)}
        if "history/.ATTRIBUTES/VARIABLE_VALUE" in names:
            self.checkpoint.restore(path).assert_existing_objects_matched()
            self.history = json.loads(self.history_json.numpy().decode())
        else:
            self.legacy.restore(path).assert_existing_objects_matched()
            done = int(self.epoch.numpy())
            # Entries past the checkpoint belong to an epoch whose checkpoint never landed.
            self.history = [h for h in self.run.read_history() if h["epoch"] <= done]
        return int(self.epoch.numpy())

    def _write_history(self) -> None:
        if self.run.read_history() != self.history:
            write_atomically(self.run.history_path, json.dumps(self.history, indent=1))

    def restore(self) -> int:
        """Loads the latest checkpoint, if any; returns the number of completed epochs.

        First removes what a kill during a save left behind, and brings history.json up to the
        checkpoint.
        """
        remove_stale_temporaries(self.run)
        latest = self.manager.latest_checkpoint
        done = self._load(latest) if latest else 0
        if latest:
            self._write_history()
        return done

    def restore_agreed(self, strategy) -> int:
        """`restore`, then step back to the epoch every worker has (multi-worker runs).

        A multi-worker run also checkpoints its starting weights as ckpt-0: a worker killed
        before its first epoch ended makes the others step back to the very start.
        """
        done = self.restore()
        if distribution.is_multi_worker(strategy) and not self.manager.latest_checkpoint:
            self.manager.save(checkpoint_number=0)
        agreed = distribution.agree_on_epoch(strategy, done)
        if agreed != done:
            path = f"{self.manager.directory}/ckpt-{agreed}"
            if not tf.io.gfile.exists(path + ".index"):
                raise UsageError(
                    f"the workers of this run are at different epochs ({agreed} and {done}) and "
                    f"{self.run.checkpoints} no longer holds ckpt-{agreed}; accepted: worker "
                    "folders from the same run, or a new --model_dir")
            self._load(path)
            self._write_history()
        return agreed

    def on_epoch_end(self, epoch, logs=None):
        entry = {"epoch": epoch + 1}
        entry.update({k: float(v) for k, v in (logs or {}).items()})
        self.history.append(entry)
        self.epoch.assign(epoch + 1)
        self.history_json.assign(json.dumps(self.history))
        self.manager.save(checkpoint_number=epoch + 1)  # epoch and history commit here
        write_atomically(self.run.history_path, json.dumps(self.history, indent=1))
        self.prune()  # after the history: a kill before it leaves one checkpoint too many

    def prune(self) -> None:
        """Deletes the checkpoints neither among the last `keep` nor the best epoch's."""
        if not self.keep:
            return
        kept = self.run.epoch_checkpoints()
        wanted = set(sorted(kept)[-self.keep:])
        if self.export_epoch == "best" and any(EXPORT_METRIC in h for h in self.history):
            wanted.add(export_choice(self.history, "best")[0])
        for epoch in sorted(set(kept) - wanted):
            delete_checkpoint(kept[epoch])


class StopOnNonFinite(keras.callbacks.Callback):
    """Ends training at the first non-finite loss, before its epoch is checkpointed.

    Keras' TerminateOnNaN only asks `fit` to stop, and the epoch's end (its checkpoint and,
    after the last epoch, the export) still runs on NaN weights. This raises instead, naming
    the epoch and step, so the run folder keeps its last finite checkpoint. An update can also
    leave non-finite weights behind a finite loss, so each epoch's weights are checked before
    its checkpoint is written (this callback goes before EpochCheckpoint).
    """

    def __init__(self, run: RunFolder):
        super().__init__()
        self.run, self.epoch = run, 0

    def _stop(self, where: str, value) -> None:
        kept = self.epoch  # epochs done before this one, all checkpointed with finite weights
        raise TrainingDiverged(
            f"the training {where} (received: {value}); {self.run.root} keeps epoch {kept}, "
            f"its last finite checkpoint; accepted: a new --model_dir with a smaller "
            "--learning_rate (or --alpha, --trades_beta)")

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            self._stop(f"loss turned non-finite at epoch {self.epoch + 1}, step {batch + 1}",
                       loss)

    def on_epoch_end(self, epoch, logs=None):
        bad = [v.path for v in self.model.weights if not bool(tf.reduce_all(tf.math.is_finite(
            tf.cast(v, tf.float32))))]
        if bad:
            self._stop(f"left non-finite weights after epoch {epoch + 1}", ", ".join(bad[:3]))


class RunModel(NamedTuple):
    """A run's model rebuilt from its folder: the model, the run's config and the epoch loaded."""

    model: keras.Model
    config: RunConfig
    epoch: int


def model_from_run(model_dir: str, *, datasets: Registry, epoch: int = 0) -> RunModel:
    """The one way to rebuild a run's model: its config.json, then the checkpoint of `epoch`.

    Args:
      model_dir: the run folder.
      datasets: the dataset registry (aalp_tf.data.datasets.DATASETS), passed in because the
        core never imports a subpackage: the run's dataset gives the model its input shape,
        classes and normalisation.
      epoch: the epoch to load (0: the latest kept).
    """
    run = RunFolder(model_dir)
    cfg = run.read_config()
    model = build_model(cfg, datasets.get(cfg.data.dataset))
    return RunModel(model, cfg, run.restore_weights(model, epoch))
