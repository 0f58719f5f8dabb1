"""A training run from a config: the folder -> data -> model -> resume -> fit -> export.

This is the one training path: the `train` command, the tests, `compare` and the tuner all go
through `train` (the tuner hands it the model its HyperModel built with `seeded_model`). Below
it, the two callbacks that write the run folder while `fit` runs: a checkpoint per epoch (and
the resume from it), and the stop at the first non-finite loss. The folder's layout, the check
that a rerun continues the same run and the choice of the exported epoch are `aalp_tf.runs`,
which analysis and serving read too.

A checkpoint is written before the history that names its epoch, and both are replaced
atomically, so a kill at any moment (kill -9 included) leaves the folder at the last completed
epoch. Each checkpoint's files are then summed (ckpt-N.sha256), so one whose bytes changed on
disk is skipped on resume like one that no longer reads. The data order and every random start
are functions of (seed, epoch, step), so a resumed run computes what an uninterrupted one would
have.
"""
import dataclasses
import json
import math
import pathlib
import sys
from typing import List, Optional

import keras
import numpy as np
import tensorflow as tf

from aalp_tf import distribution, overfitting
from aalp_tf.analysis import training_probe
from aalp_tf.serving import saved_model
from aalp_tf.config import RunConfig, check_export_epoch
from aalp_tf.data.readers import ArraySplits
from aalp_tf.data.datasets import DATASETS, load_arrays, make_data, split_sizes
from aalp_tf.errors import TrainingDiverged, UsageError
from aalp_tf.files import (ChecksumMismatch, check_writable, checksum_mismatch, full_disk_refused,
                           remove_abandoned, write_atomically, write_checksums)
from aalp_tf.runs import EXPORT_METRIC, RunFolder, checksums, export_choice
from aalp_tf.trainer import build_model


@dataclasses.dataclass
class TrainResult:
    """What a run leaves.

    Attributes:
      model: the model, holding the weights of `export_epoch`.
      history: every epoch's logged metrics.
      run_dir: the run folder.
      export_path: the SavedModel written (None without an export).
      export_epoch: the epoch --export_epoch chose (exported, or to be exported).
      reason: why that epoch, in words (export.json keeps it).
    """

    model: keras.Model
    history: list
    run_dir: pathlib.Path
    export_path: Optional[pathlib.Path]
    export_epoch: int = 0
    reason: str = ""

    @property
    def export_logs(self) -> dict:
        """The chosen epoch's metrics: what the tuner scores."""
        return next(h for h in self.history if h["epoch"] == self.export_epoch)


def seed_everything(seed: int, deterministic: bool) -> None:
    """Same seed, same numbers: weights, Python/NumPy/TF global RNGs, and (optionally) ops."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def seeded_model(cfg: RunConfig, spec, *, steps_per_epoch: int = 0) -> keras.Model:
    """The run's model, built right after seeding: what `train` trains and the tuner builds.

    Built in the scope of the run's distribution strategy, with its precision policy;
    `steps_per_epoch` sets the epsilon warm-up's length in steps (trainer.build_model).
    """
    strategy = distribution.strategy_for(cfg.train.strategy)
    distribution.check_batch(cfg.data.batch_size, strategy)
    note = distribution.set_precision(cfg.train.mixed_precision)
    if note:
        print(note)
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    with strategy.scope():
        return build_model(cfg, spec, steps_per_epoch=steps_per_epoch)


def _check_before_any_work(cfg: RunConfig, *, export_model: bool) -> RunFolder:
    """What a run can be refused for, in seconds rather than after it trained: a folder that
    holds another run, a folder it could not write, a best epoch it could not choose."""
    check_export_epoch(cfg)
    run = RunFolder(cfg.train.model_dir)
    run.check_continues(cfg)
    check_writable(run.root, flag="--model_dir", within=True)
    if export_model:
        check_writable(pathlib.Path(cfg.train.export_dir) / cfg.export_name, flag="--export_dir")
    return run


def train(cfg: RunConfig, *, arrays: Optional[ArraySplits] = None, callbacks=(),
          verbose="auto", export_model: bool = True, model: Optional[keras.Model] = None,
          wait: bool = False) -> TrainResult:
    """Trains (or resumes) the run that `cfg` describes, then exports it once.

    Args:
      cfg: the validated RunConfig.
      arrays: in-memory data instead of reading cfg.data (tests, tuner).
      callbacks: extra Keras callbacks.
      verbose: Keras' progress display; "auto": a progress bar on a terminal, else one line
        per epoch (a bar's carriage returns and colour codes would fill a log file).
      export_model: write the SavedModel of the epoch cfg.train.export_epoch picks, once the
        last epoch is done.
      model: the model `seeded_model(cfg, spec, steps_per_epoch=...)` returned (KerasTuner
        builds it before it trains it); None builds it here.
      wait: when another process holds the run folder, wait for it instead of refusing.
    """
    run = _check_before_any_work(cfg, export_model=export_model)
    spec = DATASETS.get(cfg.data.dataset)
    if arrays is None:
        arrays = load_arrays(cfg.data.dataset, source_dir=cfg.data.source_dir,
                             data_dir=cfg.data.data_dir)
    if model is None:
        model = seeded_model(cfg, spec,
                             steps_per_epoch=split_sizes(cfg.data, arrays).steps_per_epoch)
    strategy = model.distribute_strategy
    chief = distribution.is_chief(strategy)
    if not chief:  # every worker keeps its own checkpoints; only the chief writes the rest
        run = RunFolder(str(distribution.worker_dir(strategy, cfg.train.model_dir)))
    with run.held(wait=wait):  # one process at a time writes a run folder
        run.check_continues(cfg)  # again: a process holding it a moment ago may have begun it
        checkpoint = EpochCheckpoint(run, model, keep=cfg.train.keep_checkpoints,
                                     export_epoch=cfg.train.export_epoch)
        first_epoch = checkpoint.restore_agreed(strategy)
        data = make_data(cfg.data, seed=cfg.train.seed, first_epoch=first_epoch,
                         epochs=cfg.train.epochs, arrays=arrays)
        # A full disk leaves the folder at its last checkpoint. What it needs is a checkpoint's
        # worth, whichever file of the epoch met it; counted once the optimizer has its slots.
        with full_disk_refused(run.root, flag="--model_dir", what="a checkpoint",
                               needed=lambda: _bytes(model.weights + model.optimizer.variables),
                               then="run the same command again to resume"):
            run.write_config(cfg)
            _fit(model, cfg, run, data, first_epoch, [checkpoint, *callbacks], verbose)
        epoch, reason = export_choice(checkpoint.history, cfg.train.export_epoch)
        if epoch != checkpoint.history[-1]["epoch"]:
            run.restore_weights(model, epoch)  # the model of the epoch the run exports
        export_path = None
        if export_model and chief:  # an export is written whole or not at all
            with full_disk_refused(pathlib.Path(cfg.train.export_dir) / cfg.export_name,
                                   flag="--export_dir", what="the SavedModel",
                                   needed=_bytes(model.weights),
                                   then="run the same command again to export"):
                export_path = _export_once(run, model, cfg, spec, epoch=epoch, reason=reason)
    return TrainResult(model=model, history=checkpoint.history, run_dir=run.root,
                       export_path=export_path, export_epoch=epoch, reason=reason)


def _bytes(variables) -> int:
    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)


def _fit(model, cfg: RunConfig, run: RunFolder, data, first_epoch: int, callbacks,
         verbose) -> None:
    """Trains the epochs from `first_epoch` on; `callbacks` start with the EpochCheckpoint."""
    if first_epoch >= cfg.train.epochs:
        return
    if first_epoch:
        print(f"resuming {run.root} after epoch {first_epoch} of {cfg.train.epochs}")
    model.fit(data.train, epochs=cfg.train.epochs, initial_epoch=first_epoch,
              steps_per_epoch=data.steps_per_epoch, validation_data=data.val,
              # A non-finite loss stops the run before anything records its epoch. The
              # analysis probe goes before the checkpoint: a kill between them repeats the
              # epoch and rewrites its record.
              # The collapse guard reads the epoch's history entry once it is checkpointed.
              callbacks=[StopOnNonFinite(run), *training_probe.for_run(cfg, data, run.root),
                         callbacks[0], overfitting.CollapseGuard(history=callbacks[0].history),
                         keras.callbacks.TensorBoard(str(run.logs)), *callbacks[1:]],
              shuffle=False,  # the pipeline already orders each epoch by (seed, epoch)
              verbose=(1 if sys.stdout.isatty() else 2) if verbose == "auto" else verbose)


def _export_once(run: RunFolder, model, cfg: RunConfig, spec, *, epoch: int,
                 reason: str) -> pathlib.Path:
    """Exports the run's chosen epoch, unless that very epoch of this run was exported already.

    export.json says which epoch the SavedModel holds and why. The export carries its source
    (this run folder and the epoch), so a version that landed before export.json did (a kill
    between the two) is found again, not exported twice.
    """
    source = {"run": str(run.root.resolve()), "epochs": cfg.train.epochs, "epoch": epoch}
    record = run.exported()
    if record and (record["epochs"], record["epoch"]) == (cfg.train.epochs, epoch) and \
            pathlib.Path(record["path"]).exists():
        print(f"already exported: {record['path']}")
        return pathlib.Path(record["path"])
    path = saved_model.find_export(cfg.train.export_dir, cfg.export_name, source)
    if path is None:
        path = saved_model.export_model(model, image_shape=spec.image_shape,
                                        export_dir=cfg.train.export_dir, name=cfg.export_name,
                                        config_json=cfg.to_json(), source=source)
    write_atomically(run.export_record, json.dumps(
        {"path": str(path), "epochs": cfg.train.epochs, "epoch": epoch,
         "export_epoch": cfg.train.export_epoch, "reason": reason}, indent=1))
    print(f"exported SavedModel: {path} ({reason})")
    return path


# ---- the callbacks that write the run folder ------------------------------------------------


def checkpoint_files(prefix: str) -> List[str]:
    """The files of checkpoint `prefix`: its index, then its data shards."""
    return [prefix + ".index", *sorted(tf.io.gfile.glob(prefix + ".data-*"))]


def delete_checkpoint(prefix: str) -> None:
    """Removes one checkpoint's files, the index first, its manifest last: a kill midway leaves
    files that nothing reads, never an index without its data."""
    for path in checkpoint_files(prefix):
        tf.io.gfile.remove(path)
    checksums(prefix).unlink(missing_ok=True)


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
        """Restores checkpoint `path` and its history; returns its epoch. ChecksumMismatch when
        its files differ from their manifest: a flipped bit TF might restore without an error."""
        mismatch = checksum_mismatch(checksums(path))
        if mismatch:
            raise ChecksumMismatch(mismatch)
        self.checkpoint.restore(path).assert_existing_objects_matched()
        self.history = json.loads(self.history_json.numpy().decode())
        return int(self.epoch.numpy())

    def _write_history(self) -> None:
        if self.run.read_history() != self.history:
            write_atomically(self.run.history_path, json.dumps(self.history, indent=1))

    def _save(self, number: int) -> None:
        """Saves checkpoint `number`, then the sha256 of its complete files beside it. A kill
        between the two leaves a checkpoint without a manifest, which `restore` takes
        unverified, as it takes one written before manifests were."""
        prefix = self.manager.save(checkpoint_number=number)
        write_checksums(checksums(prefix), checkpoint_files(prefix))

    def restore(self) -> int:
        """Loads the newest checkpoint that reads back, if any; returns its epoch.

        First removes what a kill during a save left behind; then skips, saying so in one line
        each, checkpoints whose files differ from their manifest (a flipped bit, which TF might
        restore without an error) or that do not read back (a truncated file, a bad disk
        block): their epochs are trained again. history.json is brought in line with the
        checkpoint loaded. A checkpoint without a manifest is loaded without a word.
        """
        remove_abandoned(self.run.root)
        remove_abandoned(self.run.checkpoints)
        kept = self.run.epoch_checkpoints()
        damaged = []
        for epoch in sorted(kept, reverse=True):
            try:
                done = self._load(kept[epoch])
            except (tf.errors.OpError, IndexError, ValueError) as err:
                reason = _first_line(err)
            else:
                self._write_history()
                return done
            damaged.append(f"ckpt-{epoch} ({reason})")
            print(f"skipping {kept[epoch]}: it does not read back ({reason}); epochs after the "
                  "next older checkpoint are trained again", flush=True)
        if damaged:
            raise UsageError(f"{self.run.checkpoints} holds no checkpoint that reads back ("
                             f"{'; '.join(damaged[:3])}); accepted: a new --model_dir, or this "
                             "one with its checkpoints/ moved away to train from the start")
        return 0

    def restore_agreed(self, strategy) -> int:
        """`restore`, then step back to the epoch every worker has (multi-worker runs).

        A multi-worker run also checkpoints its starting weights as ckpt-0: a worker killed
        before its first epoch ended makes the others step back to the very start.
        """
        done = self.restore()
        if distribution.is_multi_worker(strategy) and not self.manager.latest_checkpoint:
            self._save(0)
        agreed = distribution.agree_on_epoch(strategy, done)
        if agreed != done:
            path = f"{self.manager.directory}/ckpt-{agreed}"
            if not tf.io.gfile.exists(path + ".index"):
                raise UsageError(
                    f"the workers of this run are at different epochs ({agreed} and {done}) and "
                    f"{self.run.checkpoints} no longer holds ckpt-{agreed}; accepted: worker "
                    "folders from the same run, or a new --model_dir")
            try:
                self._load(path)
            except (tf.errors.OpError, IndexError, ValueError) as err:
                raise UsageError(
                    f"the workers of this run agreed to resume after epoch {agreed}, but {path} "
                    f"does not read back ({_first_line(err)}); accepted: worker folders whose "
                    "checkpoints read back, or a new --model_dir") from None
            self._write_history()
        return agreed

    def on_epoch_end(self, epoch, logs=None):
        entry = {"epoch": epoch + 1}
        entry.update({k: float(v) for k, v in (logs or {}).items()})
        self.history.append(entry)
        self.epoch.assign(epoch + 1)
        self.history_json.assign(json.dumps(self.history))
        self._save(epoch + 1)  # epoch and history commit here
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


def _first_line(err: BaseException) -> str:
    """Why a checkpoint did not read back, in one line: a checksum's own words, else the
    error's type and the first line of its message."""
    first = (str(err).strip().splitlines() or [""])[0][:200]
    return first if isinstance(err, ChecksumMismatch) else f"{type(err).__name__}: {first}"


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
