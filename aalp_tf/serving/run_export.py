"""Export any checkpoint of a run folder as a SavedModel: what `python -m aalp_tf.export` does.

The model is rebuilt from the run's config.json exactly as training built it, its weights come
from `checkpoints/ckpt-<epoch>` (runs.model_from_run), and the SavedModel is written by
`saved_model.export_model`, the code training's own final export runs.
"""
import pathlib
from typing import Tuple

from aalp_tf import runs
from aalp_tf.serving.config import ExportConfig
from aalp_tf.data.datasets import DATASETS
from aalp_tf.serving import saved_model


def export_run(cfg: ExportConfig) -> Tuple[pathlib.Path, int]:
    """Exports the checkpoint `cfg` names; returns (the version folder, the epoch exported).

    Without --epoch, the epoch the run's own --export_epoch picks from its history, so that
    exporting a run again gives the model its training exported (--export_epoch=best: the best
    epoch, whose checkpoint the run keeps), not whichever epoch happens to be the latest.
    """
    epoch = cfg.epoch or runs.chosen_epoch(cfg.model_dir)
    model, run_cfg, epoch = runs.model_from_run(cfg.model_dir, epoch=epoch)
    path = saved_model.export_model(
        model, image_shape=DATASETS.get(run_cfg.data.dataset).image_shape,
        export_dir=cfg.export_dir or run_cfg.train.export_dir,
        name=cfg.name or run_cfg.export_name, version=cfg.version,
        config_json=run_cfg.to_json(), warmup_batch_sizes=cfg.warmup_batch_sizes)
    return path, epoch

