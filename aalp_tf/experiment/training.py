"""A training run from a config: data -> model -> resume -> fit -> choose the epoch -> export.

This is the one training path: the `train` command, the tests and the tuner all go through
`train` (the tuner hands it the model its HyperModel built with `seeded_model`).
"""
import dataclasses
import json
import pathlib
import sys
from typing import Optional

import keras
import tensorflow as tf

from aalp_tf import distribution
from aalp_tf.analysis import training_probe
from aalp_tf.serving import saved_model
from aalp_tf.config import RunConfig, check_export_epoch
from aalp_tf.data.readers import ArraySplits
from aalp_tf.data.datasets import DATASETS, load_arrays, make_data, split_sizes
from aalp_tf.files import check_writable, write_atomically
from aalp_tf.runs import RunFolder, export_choice
from aalp_tf.runs.callbacks import EpochCheckpoint, StopOnNonFinite
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
          verbose="auto", export_model: bool = True,
          model: Optional[keras.Model] = None) -> TrainResult:
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
    checkpoint = EpochCheckpoint(run, model, keep=cfg.train.keep_checkpoints,
                                 export_epoch=cfg.train.export_epoch)
    first_epoch = checkpoint.restore_agreed(strategy)
    data = make_data(cfg.data, seed=cfg.train.seed, first_epoch=first_epoch,
                     epochs=cfg.train.epochs, arrays=arrays)
    run.write_config(cfg)
    if first_epoch < cfg.train.epochs:
        if first_epoch:
            print(f"resuming {run.root} after epoch {first_epoch} of {cfg.train.epochs}")
        model.fit(data.train, epochs=cfg.train.epochs, initial_epoch=first_epoch,
                  steps_per_epoch=data.steps_per_epoch, validation_data=data.val,
                  # A non-finite loss stops the run before anything records its epoch. The
                  # analysis probe goes before the checkpoint: a kill between them repeats the
                  # epoch and rewrites its record.
                  callbacks=[StopOnNonFinite(run), *training_probe.for_run(cfg, data, run.root),
                             checkpoint,
                             keras.callbacks.TensorBoard(str(run.logs)), *callbacks],
                  shuffle=False,  # the pipeline already orders each epoch by (seed, epoch)
                  verbose=(1 if sys.stdout.isatty() else 2) if verbose == "auto" else verbose)
    epoch, reason = export_choice(checkpoint.history, cfg.train.export_epoch)
    if epoch != checkpoint.history[-1]["epoch"]:
        run.restore_weights(model, epoch)  # the model of the epoch the run exports
    export_path = None
    if export_model and chief:
        export_path = _export_once(run, model, cfg, spec, epoch=epoch, reason=reason)
    return TrainResult(model=model, history=checkpoint.history, run_dir=run.root,
                       export_path=export_path, export_epoch=epoch, reason=reason)


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
