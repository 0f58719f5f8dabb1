"""Training-time analysis records (Fig. 4, Fig. 9), enabled by `--analysis_probe=N`.

After every epoch the callback attacks a fixed probe slice (the first N validation examples, or
test examples when there is no validation slice) with the run's validation adversary and writes
`<model_dir>/analysis/epoch_<k>.json`: per-example measures (true-class probabilities, losses,
ALP loss, clean/adversarial correctness) and the feature contribution C of Eq. 5. `analyze
--what=training` reads them back.

The callback runs before the epoch's checkpoint is saved, so a run killed in between repeats the
epoch and rewrites its record. It draws no random numbers from any global generator (PGD starts
are stateless), so a run with the probe trains exactly as one without it.
"""
import dataclasses
import json
import pathlib
from typing import List

import keras
import numpy as np

from aalp_tf.analysis import probes
from aalp_tf.config import RunConfig, check
from aalp_tf.files import write_atomically

RECORDS_DIR = "analysis"
_PROBE_SEED_OFFSET = 2  # validation PGD uses seed + 1; keep the probe's starts apart from it


def _first_examples(dataset, n: int):
    xs, ys, have = [], [], 0
    for x, y in dataset:
        xs.append(np.asarray(x))
        ys.append(np.asarray(y))
        have += len(ys[-1])
        if have >= n:
            break
    return np.concatenate(xs)[:n], np.concatenate(ys)[:n]


class AnalysisProbe(keras.callbacks.Callback):
    """Writes one analysis record per epoch into `folder`.

    Args:
      folder: where epoch_<k>.json files go.
      images, labels: the fixed probe slice (float [N, H, W, C] in [0, 1], int [N]).
      attack: the PGD adversary of the probe.
      source: what the slice is ("validation" or "test"), recorded with each epoch.
      seed: seed of the PGD random starts (the same every epoch).
      batch_size: batch of the probe's forward and backward passes.
    """

    def __init__(self, folder, images, labels, *, attack, source, seed=0, batch_size=128):
        super().__init__()
        self.folder = pathlib.Path(folder)
        self.images, self.labels = images, labels
        self.attack, self.source = attack, source
        self.seed, self.batch_size = seed, batch_size

    def on_epoch_end(self, epoch, logs=None):
        adv = probes.adversarial_examples(self.model.inference_logits, self.images, self.labels,
                                          attack=self.attack, seed=self.seed,
                                          batch_size=self.batch_size)
        entry = {"epoch": epoch + 1, "source": self.source, "examples": len(self.labels),
                 "attack": dataclasses.asdict(self.attack)}
        entry.update(probes.record(self.model, self.images, adv, self.labels,
                                   batch_size=self.batch_size))
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomically(self.folder / f"epoch_{epoch + 1:04d}.json", json.dumps(entry))


def for_run(cfg: RunConfig, data, run_root) -> List[keras.callbacks.Callback]:
    """[AnalysisProbe] when cfg.train.analysis_probe > 0, else []."""
    n = cfg.train.analysis_probe
    if not n:
        return []
    dataset, source, available = data.val, "validation", data.num_val
    if dataset is None:
        dataset, source, available = data.test, "test", data.num_test
    check(n <= available, f"--analysis_probe={n} exceeds the {available} {source} examples; "
                          f"accepted: 0..{available}")
    images, labels = _first_examples(dataset, n)
    steps = cfg.train.val_attack_steps or cfg.attack.steps
    return [AnalysisProbe(pathlib.Path(run_root) / RECORDS_DIR, images, labels,
                          attack=dataclasses.replace(cfg.attack, steps=steps), source=source,
                          seed=cfg.train.seed + _PROBE_SEED_OFFSET,
                          batch_size=cfg.data.batch_size)]


def read_records(run_root) -> List[dict]:
    """The run's analysis records, by epoch ([] when it was trained without the probe)."""
    folder = pathlib.Path(run_root) / RECORDS_DIR
    return [json.loads(p.read_text()) for p in sorted(folder.glob("epoch_*.json"))]
