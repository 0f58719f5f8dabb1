"""The models `analyze` reads: run folders and SavedModels, and what each of them can give.

- A run folder (config.json + checkpoints/) is rebuilt with `trainer.build_model` and its latest
  checkpoint restored: logits, the inner activations Eq. 5 and 6 need, and the training history.
- A SavedModel exported by aalp_tf keeps its run config in assets.extra/aalp_config.json: the
  model is rebuilt from it and its variables restored from the SavedModel itself
  (signatures.restore_variables, checked against the serving signature), so it gives logits
  and inner activations, not the history.
- Any other SavedModel whose serving signature maps one image input to one logits output (a
  Keras `model.export`, say; evaluation.loading) gives logits only: the analyses that need
  inner activations or a history skip it, saying why.
"""
import dataclasses
import pathlib
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from aalp_tf import runs, signatures
from aalp_tf.config import RunConfig
from aalp_tf.errors import UsageError
from aalp_tf.evaluation import loading
from aalp_tf.trainer import build_model

LOGITS, INTERNALS, RUN_FOLDER = "logits", "internals", "run folder"


@dataclasses.dataclass
class ModelSource:
    """One `--models` entry, loaded.

    Attributes:
      name: the label in figures and tables.
      path: what the user passed.
      logits_fn: images in [0, 1] -> logits, inference mode.
      model: the rebuilt trainer.AdversarialModel, or None when only logits are available.
      run_dir: the run folder (history.json, analysis/, checkpoints/), or None.
      missing: why the model is None (one clause), for the lines that skip an analysis.
    """

    name: str
    path: pathlib.Path
    logits_fn: Callable
    model: Optional[object] = None
    run_dir: Optional[pathlib.Path] = None
    missing: str = ""

    def lacks(self, need: str) -> Optional[str]:
        """None if this source can serve an analysis that needs `need`, else the reason."""
        if need == INTERNALS and self.model is None:
            return self.missing
        if need == RUN_FOLDER and self.run_dir is None:
            return (f"{self.path} is a SavedModel; training curves live in a run folder "
                    "(history.json, checkpoints/): pass that instead")
        return None


def _check_dataset(cfg: RunConfig, where: pathlib.Path, dataset: str) -> None:
    if cfg.data.dataset != dataset:
        raise UsageError(f"--models: {where} was trained on {cfg.data.dataset}; accepted: "
                         f"models of --dataset={dataset}")


def _from_run_folder(name: str, root: pathlib.Path, spec) -> ModelSource:
    _check_dataset(runs.RunFolder(root).read_config(), root, spec.name)
    model = runs.model_from_run(root, epoch=runs.chosen_epoch(root)).model  # the one it exports
    return ModelSource(name=name, path=root, logits_fn=model.inference_logits, model=model,
                       run_dir=root)


def _from_saved_model(name: str, root: pathlib.Path, spec, check_images) -> ModelSource:
    logits_fn, shape = loading.load_logits(str(root), name="--models")
    if shape is not None and tuple(shape) != tuple(spec.image_shape):
        raise UsageError(f"--models: {root} takes images {list(shape)} but --dataset="
                         f"{spec.name} has {list(spec.image_shape)}")
    config_path = root / signatures.EXTRA / signatures.CONFIG_ASSET
    source = ModelSource(name=name, path=root, logits_fn=logits_fn)
    if not config_path.is_file():
        source.missing = (f"{root} has no {signatures.EXTRA}/{signatures.CONFIG_ASSET}, so only "
                          "its logits are visible; pass its run folder")
        return source
    try:
        cfg = RunConfig.from_json(config_path.read_text())
    except UsageError as err:  # another aalp_tf's config: the logits still serve
        source.missing = f"{config_path}: {err}; pass its run folder"
        return source
    _check_dataset(cfg, root, spec.name)
    try:
        runs.check_registered(cfg, root)
    except UsageError as err:  # a method of the user's own, without --imports: logits serve
        source.missing = str(err)
        return source
    model = build_model(cfg, spec)
    try:
        signatures.restore_variables(model, root)
    except UsageError as err:
        source.missing = f"{err}; pass its run folder"
        return source
    x = tf.constant(check_images, tf.float32)
    if not np.allclose(model(x), logits_fn(x), atol=1e-4):
        source.missing = (f"the model rebuilt from {config_path} does not reproduce {root}'s "
                          "logits; pass its run folder")
        return source
    source.model = model
    return source


def load(name: str, path: str, spec, *, check_images) -> ModelSource:
    """Loads one `--models` entry.

    Args:
      name: label.
      path: a run folder or a SavedModel version folder.
      spec: the dataset's DatasetSpec (the model must fit its images).
      check_images: a few images to confirm a rebuilt SavedModel matches its signature.
    """
    root = pathlib.Path(path)
    if (root / "config.json").is_file():
        return _from_run_folder(name, root, spec)
    if (root / "saved_model.pb").is_file():
        return _from_saved_model(name, root, spec, check_images)
    hint = ""
    versions = loading.version_folders(root)
    if versions:
        hint = f" (it holds SavedModel versions {versions}: pass {root}/<version>)"
    raise UsageError(f"--models {name}:{path} is neither a run folder (config.json, "
                     f"checkpoints/) nor a SavedModel (saved_model.pb){hint}")


def describe(source: ModelSource) -> str:
    kind = "run folder" if source.run_dir else "SavedModel"
    sees = "logits and inner activations" if source.model is not None else "logits only"
    return f"{source.name}: {kind} {source.path} ({sees})"
