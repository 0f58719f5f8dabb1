"""The two callbacks a training run writes its folder with: a checkpoint per epoch (and the
resume from it), and the stop at the first non-finite loss.

A checkpoint is written before the history that names its epoch, and both are replaced
atomically, so a kill at any moment (kill -9 included) leaves the folder at the last completed
epoch. The data order and every random start are functions of (seed, epoch, step), so a resumed
run computes what an uninterrupted one would have.
"""
import json
import math
from typing import List

import keras
import tensorflow as tf

from aalp_tf import distribution
from aalp_tf.errors import TrainingDiverged, UsageError
from aalp_tf.files import remove_abandoned, write_atomically
from aalp_tf.runs import EXPORT_METRIC, RunFolder, export_choice


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
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(run.checkpoints),
                                                  max_to_keep=None)
        self.history: List[dict] = []

    def _load(self, path: str) -> int:
        """Restores checkpoint `path` and its history; returns its epoch."""
        self.checkpoint.restore(path).assert_existing_objects_matched()
        self.history = json.loads(self.history_json.numpy().decode())
        return int(self.epoch.numpy())

    def _write_history(self) -> None:
        if self.run.read_history() != self.history:
            write_atomically(self.run.history_path, json.dumps(self.history, indent=1))

    def restore(self) -> int:
        """Loads the latest checkpoint, if any; returns the number of completed epochs.

        First removes what a kill during a save left behind, and brings history.json up to the
        checkpoint.
        """
        remove_abandoned(self.run.root)
        remove_abandoned(self.run.checkpoints)
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
