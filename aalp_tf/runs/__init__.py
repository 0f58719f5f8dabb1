"""The run folder: its layout, the check that a rerun continues the same run, the epoch it
exports, and the model rebuilt from it. What writes it during training is the callbacks of
experiment/training.py.

Layout of `--model_dir`:
    config.json        the resolved RunConfig (written once, of config.FORMAT; a rerun must match)
    checkpoints/       tf.train checkpoints of model + optimizer + epoch + history, one per
                       epoch: the last --keep_checkpoints, and the epoch --export_epoch=best
                       exports; beside each ckpt-N, ckpt-N.sha256 (its files' sha256)
    history.json       one entry of logged metrics per completed epoch (a copy of the newest
                       checkpoint's)
    logs/              TensorBoard event files
    export.json        where the final SavedModel went, which epoch it holds and why
    lock               flock'ed by the one process training the run; it names that process

A subpackage rather than a core module: a run's model needs its dataset (input shape, classes,
normalisation), which the data registry knows, so `model_from_run` imports it directly. The flow
of a training run is experiment/training.py; analysis and serving read run folders through this
package, so it imports neither of them.
"""
import contextlib
import fcntl
import json
import os
import pathlib
import re
import socket
from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple

import keras
import tensorflow as tf

from aalp_tf import overfitting
from aalp_tf.config import FORMAT, RunConfig, differences
from aalp_tf.data.datasets import DATASETS
from aalp_tf.errors import UsageError
from aalp_tf.files import checksum_mismatch, write_atomically
from aalp_tf.methods import METHODS
from aalp_tf.models import BACKBONES
from aalp_tf.trainer import build_model

# Fields that may change between a run and its continuation: more epochs, other file locations.
MAY_CHANGE = {"train.epochs", "data.source_dir", "data.data_dir", "train.export_dir",
               "train.keep_checkpoints",
               "train.export_epoch",  # only which epoch is exported
               "train.analysis_probe",  # the probe only reads the model
               "train.strategy",  # a run may resume on another machine
               "train.model_dir"}  # the folder itself, however the command spells its path


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
        if not self.config_path.exists():
            return
        changed = differences(self._recorded(), json.loads(cfg.to_json()),
                              may_change=MAY_CHANGE)
        if changed:
            raise UsageError(f"--model_dir {self.root} holds a run with other settings "
                             f"({'; '.join(changed[:3])}); accepted: the same settings to "
                             "resume it, or a new --model_dir")

    def _recorded(self) -> dict:
        """config.json as written, once it is known to be of this FORMAT."""
        try:
            recorded = json.loads(self.config_path.read_text())
        except ValueError:
            raise UsageError(f"{self.config_path} is not valid JSON; accepted: the config.json "
                             "written by python -m aalp_tf.train") from None
        if not isinstance(recorded, dict) or recorded.get("format") != FORMAT:
            found = recorded.get("format", "none") if isinstance(recorded, dict) else "none"
            raise UsageError(
                f"--model_dir {self.root} holds a run of another aalp_tf (config.json format "
                f"{found}; this one reads format {FORMAT}); accepted: a new --model_dir to "
                "train it again, or the aalp_tf that wrote it to resume or export it")
        return recorded

    def read_config(self) -> RunConfig:
        """The run's config.json, or one line saying the folder holds no run."""
        if not self.config_path.is_file():
            raise UsageError(f"--model_dir {self.root} holds no run (no config.json); accepted: "
                             "a run folder written by python -m aalp_tf.train")
        return RunConfig.from_dict(self._recorded())

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
            raise UsageError(f"--epoch={epoch}: {self.checkpoints} keeps no checkpoint of "
                             f"that epoch; accepted: one of {sorted(kept)}")
        mismatch = checksum_mismatch(checksums(kept[epoch]))
        if mismatch:  # a flipped bit would restore without an error, and be exported
            raise UsageError(f"{kept[epoch]} no longer holds what was saved ({mismatch}); "
                             f"accepted: another epoch of {sorted(kept)} (export --epoch=N; train "
                             "--export_epoch=last exports the last), or the run trained again "
                             "in a new --model_dir")
        tf.train.Checkpoint(model=model).restore(kept[epoch]).expect_partial(
            ).assert_existing_objects_matched()
        return epoch

    @contextlib.contextmanager
    def held(self, *, wait: bool = False) -> Iterator[None]:
        """Holds the folder while the block runs, so one process at a time trains it: two would
        interleave their checkpoints. Another holder is named in one line, or waited for.

        The kernel drops an flock when its process dies, however it dies, so a lock is never
        left held; the file still names a killed holder, and the next one says it took over.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    raise UsageError(
                        f"--model_dir {self.root} is held by {_holder(handle)}, which trains "
                        "this run now; accepted: the same command once it ends (or with --wait "
                        "to wait for it), or a new --model_dir") from None
                print(f"waiting for {self.root}, held by {_holder(handle)}", flush=True)
                fcntl.flock(handle, fcntl.LOCK_EX)
            left = _holder(handle)
            if left:
                print(f"taking over {self.root} from {left}, which is gone", flush=True)
            _write_holder(handle, f"{socket.gethostname()} PID {os.getpid()}")
            try:
                yield
            finally:
                _write_holder(handle, "")  # released cleanly: nobody to take over from
                fcntl.flock(handle, fcntl.LOCK_UN)

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


def checksums(prefix: str) -> pathlib.Path:
    """The manifest beside checkpoint `prefix`: the sha256 of its index and data files, written
    once they are complete (files.write_checksums)."""
    return pathlib.Path(prefix + ".sha256")


def _holder(handle) -> str:
    handle.seek(0)
    return handle.read().strip()


def _write_holder(handle, holder: str) -> None:
    handle.seek(0)
    handle.truncate()
    handle.write(holder + "\n" if holder else "")
    handle.flush()


EXPORT_METRIC = "val_robust_accuracy"  # what --export_epoch=best maximises


def export_choice(history: List[dict], rule: str) -> Tuple[int, str]:
    """The epoch a run exports under `rule` ("best" or "last"), and why, in words.

    "best" is the epoch with the highest val_robust_accuracy; among equals (all zero in a run
    still at chance under attack, say) the one with the highest val_clean_accuracy, then the
    later one. Epochs from a catastrophic overfitting on are not candidates (overfitting.py):
    a collapsed single-step run exports the epoch before it, and the reason says so.
    """
    epoch, reason = _choice(history, rule)
    return epoch, reason + overfitting.export_note(history)


def _choice(history: List[dict], rule: str) -> Tuple[int, str]:
    last = history[-1]
    if rule == "last":
        return last["epoch"], f"the last epoch ({last['epoch']}), as --export_epoch=last asks"
    scored = [entry for entry in overfitting.before_collapse(history) if EXPORT_METRIC in entry]
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


class RunModel(NamedTuple):
    """A run's model rebuilt from its folder: the model, the run's config and the epoch loaded."""

    model: keras.Model
    config: RunConfig
    epoch: int


def model_from_run(model_dir, *, epoch: int = 0) -> RunModel:
    """The one way to rebuild a run's model: its config.json, then the checkpoint of `epoch`
    (0: the latest kept)."""
    run = RunFolder(model_dir)
    cfg = run.read_config()
    check_registered(cfg, run.root)
    model = build_model(cfg, DATASETS.get(cfg.data.dataset))
    return RunModel(model, cfg, run.restore_weights(model, epoch))


def check_registered(cfg: RunConfig, where) -> None:
    """A run (or its export, at `where`) trained with a method or backbone of the user's own is
    rebuilt only once the module that registers it is imported."""
    METHODS.require(cfg.method.name, where)
    BACKBONES.require(cfg.model.name, where, kind="backbone")
