"""Export any checkpoint of a run folder as a SavedModel: what `python -m aalp_tf.export` does.

The model is rebuilt from the run's config.json exactly as training built it, its weights come
from `checkpoints/ckpt-<epoch>`, and the SavedModel is written by `saved_model.export_model`, the code
training's own final export runs.
"""
import json
import pathlib
import re
from typing import Dict, Tuple

import tensorflow as tf

from aalp_tf.serving import saved_model
from aalp_tf.config import ExportConfig, RunConfig
from aalp_tf.data.datasets import DATASETS
from aalp_tf.errors import UsageError
from aalp_tf.runs import RunFolder
from aalp_tf.trainer import build_model
from aalp_tf.experiment.training import export_name


def run_config(run: RunFolder) -> RunConfig:
    """The run's config.json, or one line saying the folder holds no run."""
    if not run.config_path.is_file():
        raise UsageError(f"--model_dir {run.root} holds no run (no config.json); accepted: a "
                         "run folder written by python -m aalp_tf.train")
    try:
        return RunConfig.from_json(run.config_path.read_text())
    except json.JSONDecodeError:
        raise UsageError(f"{run.config_path} is not valid JSON; accepted: the config.json "
                         "written by python -m aalp_tf.train") from None


def epoch_checkpoints(run: RunFolder) -> Dict[int, str]:
    """Epoch -> checkpoint prefix, for every checkpoint the run folder still keeps."""
    state = tf.train.get_checkpoint_state(str(run.checkpoints))
    paths = list(state.all_model_checkpoint_paths) if state else []
    found = {}
    for path in paths:
        match = re.search(r"ckpt-(\d+)$", path)
        if match and tf.io.gfile.exists(path + ".index"):
            found[int(match[1])] = path
    return found


def restore(run: RunFolder, model, epoch: int) -> int:
    """Loads the model's weights of `epoch` (0: the latest checkpoint); returns that epoch."""
    kept = epoch_checkpoints(run)
    if not kept:
        raise UsageError(f"--model_dir {run.root} has no checkpoint yet; accepted: a run "
                         "folder with at least one completed epoch")
    epoch = epoch or max(kept)
    if epoch not in kept:
        raise UsageError(f"--checkpoint={epoch}: {run.checkpoints} keeps no checkpoint of that "
                         f"epoch; accepted: one of {sorted(kept)} (0: the latest)")
    # The model alone: the optimizer's slots are of no use to an export, and a mixed-precision
    # run's optimizer has another structure than the one build_model makes.
    tf.train.Checkpoint(model=model).restore(kept[epoch]).expect_partial(
        ).assert_existing_objects_matched()
    return epoch


def export_run(cfg: ExportConfig) -> Tuple[pathlib.Path, int]:
    """Exports the checkpoint `cfg` names; returns (the version folder, the epoch exported)."""
    run = RunFolder(cfg.model_dir)
    run_cfg = run_config(run)
    spec = DATASETS.get(run_cfg.data.dataset)
    model = build_model(run_cfg, spec)
    epoch = restore(run, model, cfg.checkpoint)
    path = saved_model.export_model(
        model, image_shape=spec.image_shape, export_dir=cfg.export_dir or run_cfg.train.export_dir,
        name=cfg.name or export_name(run_cfg), version=cfg.version,
        config_json=run_cfg.to_json(), warmup_batch_sizes=cfg.warmup_batch_sizes)
    return path, epoch
