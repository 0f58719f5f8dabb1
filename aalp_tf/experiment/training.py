"""A training run from a config: data -> model -> resume -> fit -> export.

This is the one training path: the `train` command, the tests and the tuner all go through
`train` (the tuner hands it the model its HyperModel built with `seeded_model`).
"""
import dataclasses
import json
import pathlib
from typing import Optional

import keras
import tensorflow as tf

from aalp_tf import distribution
from aalp_tf.analysis import training_probe
from aalp_tf.serving import saved_model
from aalp_tf.config import RunConfig
from aalp_tf.data.readers import ArraySplits
from aalp_tf.data.datasets import DATASETS, make_data
from aalp_tf.runs import EpochCheckpoint, RunFolder, write_atomically
from aalp_tf.trainer import build_model


@dataclasses.dataclass
class TrainResult:
    model: keras.Model
    history: list
    run_dir: pathlib.Path
    export_path: Optional[pathlib.Path]


def seed_everything(seed: int, deterministic: bool) -> None:
    """Same seed, same numbers: weights, Python/NumPy/TF global RNGs, and (optionally) ops."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def export_name(cfg: RunConfig) -> str:
    return cfg.train.export_name or f"{cfg.data.dataset}_{cfg.method.name}"


def seeded_model(cfg: RunConfig, spec) -> keras.Model:
    """The run's model, built right after seeding: what `train` trains and the tuner builds.

    Built in the scope of the run's distribution strategy, with its precision policy.
    """
    strategy = distribution.strategy_for(cfg.train.strategy)
    distribution.check_batch(cfg.data.batch_size, strategy)
    note = distribution.set_precision(cfg.train.mixed_precision)
    if note:
        print(note)
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    with strategy.scope():
        return build_model(cfg, spec)


def train(cfg: RunConfig, *, arrays: Optional[ArraySplits] = None, callbacks=(),
          verbose="auto", export_model: bool = True,
          model: Optional[keras.Model] = None) -> TrainResult:
    """Trains (or resumes) the run that `cfg` describes, then exports it once.

    Args:
      cfg: the validated RunConfig.
      arrays: in-memory data instead of reading cfg.data (tests, tuner).
      callbacks: extra Keras callbacks.
      verbose: Keras' progress display ("auto": a progress bar on a terminal).
      export_model: write the SavedModel when the last epoch is done.
      model: the model `seeded_model(cfg, spec)` returned (KerasTuner builds it before it
        trains it); None builds it here.
    """
    run = RunFolder(cfg.train.model_dir)
    run.check_continues(cfg)
    spec = DATASETS.get(cfg.data.dataset)
    if model is None:
        model = seeded_model(cfg, spec)
    strategy = model.distribute_strategy
    chief = distribution.is_chief(strategy)
    if not chief:  # every worker keeps its own checkpoints; only the chief writes the rest
        run = RunFolder(str(distribution.worker_dir(strategy, cfg.train.model_dir)))
    checkpoint = EpochCheckpoint(run, model, keep=cfg.train.keep_checkpoints)
    first_epoch = checkpoint.restore_agreed(strategy)
    data = make_data(cfg.data, seed=cfg.train.seed, first_epoch=first_epoch,
                     epochs=cfg.train.epochs, arrays=arrays)
    run.write_config(cfg)
    model.steps_per_epoch = data.steps_per_epoch
    if first_epoch < cfg.train.epochs:
        if first_epoch:
            print(f"resuming {run.root} after epoch {first_epoch} of {cfg.train.epochs}")
        model.fit(data.train, epochs=cfg.train.epochs, initial_epoch=first_epoch,
                  steps_per_epoch=data.steps_per_epoch, validation_data=data.val,
                  # The analysis probe goes before the checkpoint: a kill between them
                  # repeats the epoch and rewrites its record.
                  callbacks=[*training_probe.for_run(cfg, data, run.root), checkpoint,
                             keras.callbacks.TensorBoard(str(run.logs)), *callbacks],
                  shuffle=False,  # the pipeline already orders each epoch by (seed, epoch)
                  verbose=verbose)
    export_path = None
    if export_model and chief:
        export_path = _export_once(run, model, cfg, spec)
    return TrainResult(model=model, history=checkpoint.history, run_dir=run.root,
                       export_path=export_path)


def _export_once(run: RunFolder, model, cfg: RunConfig, spec) -> pathlib.Path:
    """Exports the finished run, unless this very run (same epochs) was exported already."""
    record = run.exported()
    if record and record.get("epochs") == cfg.train.epochs and pathlib.Path(
            record["path"]).exists():
        print(f"already exported: {record['path']}")
        return pathlib.Path(record["path"])
    path = saved_model.export_model(model, image_shape=spec.image_shape,
                               export_dir=cfg.train.export_dir, name=export_name(cfg),
                               config_json=cfg.to_json())
    write_atomically(run.export_record,
                     json.dumps({"path": str(path), "epochs": cfg.train.epochs}))
    print(f"exported SavedModel: {path}")
    return path
