"""The analyses `analyze --what=NAME` runs, as a registry, and the run over every model.

Each analysis says what it needs from a model: its logits (any SavedModel), its inner
activations (a run folder, or a SavedModel exported by aalp_tf), or its run folder (training
history and checkpoints). A model that cannot serve an analysis is skipped with one line saying
why; the others go ahead.

All analyses of one invocation see the same test images and, per model, the same adversarial
examples: PGD with the cross-entropy of the true label, from a random start seeded by --seed.
"""
import dataclasses
import pathlib
from typing import Callable, Dict, List

import numpy as np

from aalp_tf.analysis import figures, model_sources, probes, quantities, tables, training_probe
from aalp_tf.analysis.config import AnalysisConfig
from aalp_tf.data.datasets import DATASETS, evaluation_batches
from aalp_tf.evaluation.suite import write_json
from aalp_tf.analysis.model_sources import INTERNALS, LOGITS, RUN_FOLDER
from aalp_tf.registry import Registry
from aalp_tf.runs import RunFolder, chosen_epoch


@dataclasses.dataclass(frozen=True)
class Analysis:
    """run(context, sources) -> written paths; `needs` is what each source must provide."""

    run: Callable
    needs: str
    summary: str


ANALYSES: Registry[Analysis] = Registry("analysis")


class Context:
    """The images, settings and per-model adversarial examples shared by the analyses."""

    def __init__(self, cfg: AnalysisConfig, images: np.ndarray, labels: np.ndarray, sources):
        self.cfg, self.images, self.labels = cfg, images, labels
        self.sources = {s.name: s for s in sources}
        self.batch_size = cfg.data.batch_size
        self._adversarial, self._measures = {}, {}

    def path(self, name: str) -> pathlib.Path:
        return pathlib.Path(self.cfg.out) / name

    def adversarial(self, source) -> np.ndarray:
        if source.name not in self._adversarial:
            self._adversarial[source.name] = probes.adversarial_examples(
                source.logits_fn, self.images, self.labels, attack=self.cfg.attack,
                seed=self.cfg.seed, batch_size=self.batch_size)
        return self._adversarial[source.name]

    def measures(self, source) -> Dict[str, np.ndarray]:
        if source.name not in self._measures:
            self._measures[source.name] = probes.measures(
                source.logits_fn, self.images, self.adversarial(source), self.labels,
                batch_size=self.batch_size)
        return self._measures[source.name]

    def setting(self) -> dict:
        """What every JSON output records about how it was computed."""
        return {"dataset": self.cfg.data.dataset, "examples": len(self.labels),
                "attack": dataclasses.asdict(self.cfg.attack), "seed": self.cfg.seed,
                "models": {name: str(s.path) for name, s in self.sources.items()}}


def _contributions(ctx: Context, sources) -> List[pathlib.Path]:
    result = {}
    for s in sources:
        result[s.name] = {kind: quantities.contribution(feature_gradients=probes.feature_gradients(
            s.model, x, ctx.labels, batch_size=ctx.batch_size)).numpy()
            for kind, x in (("clean", ctx.images), ("adversarial", ctx.adversarial(s)))}
    record = dict(ctx.setting(), equation="Eq. 5: C = mean over images of |dCE/dA_fc|",
                  summary={m: {k: tables.describe(v) for k, v in c.items()}
                           for m, c in result.items()},
                  contributions={m: {k: v.tolist() for k, v in c.items()}
                                 for m, c in result.items()})
    return [figures.contribution_histograms(result, ctx.path("contributions.png")),
            write_json(ctx.path("contributions.json"), record)]


def _gradcam(ctx: Context, sources) -> List[pathlib.Path]:
    k = min(ctx.cfg.cam_images, len(ctx.labels))
    labels = ctx.labels[:k]
    shown, maps, predictions, layers, hot = {}, {}, {}, {}, {}
    for s in sources:
        origin = s if ctx.cfg.cam_source == "own" else ctx.sources[ctx.cfg.cam_source]
        shown[s.name] = ctx.adversarial(origin)[:k]
        layers[s.name] = probes.resolve_cam_layer(s.model.backbone, ctx.cfg.cam_layer)
        maps[s.name] = probes.grad_cam_maps(s.model, layers[s.name], shown[s.name], labels,
                                            batch_size=ctx.batch_size)
        predictions[s.name] = probes.logits(s.logits_fn, shown[s.name]).argmax(-1)
        hot[s.name] = quantities.hot_area(maps=maps[s.name])
    layer = ", ".join(sorted(set(layers.values())))
    record = dict(ctx.setting(), equation="Eq. 6: relu(dCE/dA * A) summed over channels",
                  layers=layers, cam_source=ctx.cfg.cam_source, labels=labels.tolist(),
                  predictions={m: p.tolist() for m, p in predictions.items()},
                  hot_area={m: {"per_image": h.round(4).tolist(), "mean": float(h.mean())}
                            for m, h in hot.items()},
                  hot_area_meaning="share of pixels at >= 0.5 of the map's maximum")
    return [figures.grad_cam_grid(clean=ctx.images[:k], adversarial=shown, maps=maps,
                                  labels=labels, predictions=predictions, layer=layer,
                                  path=ctx.path("gradcam.png")),
            write_json(ctx.path("gradcam.json"), record)]


def _sets(ctx: Context, sources) -> List[pathlib.Path]:
    stats = {s.name: quantities.set_statistics(measures=ctx.measures(s)) for s in sources}
    markdown = tables.sets_markdown(stats, attack=ctx.cfg.attack)
    print(tables.consistent_share_table(stats))
    path = ctx.path("sets.md")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown)
    per_example = {s.name: probes.jsonable(ctx.measures(s)) for s in sources}  # Fig. 11's data
    return [path, write_json(ctx.path("sets.json"), dict(ctx.setting(), sets=stats,
                                                         per_example=per_example))]


def _scatter(ctx: Context, sources) -> List[pathlib.Path]:
    return [figures.confidence_scatter({s.name: ctx.measures(s) for s in sources},
                                       ctx.path("scatter.png"))]


def _records_from_checkpoints(ctx: Context, source) -> List[dict]:
    """Fig. 4 / Fig. 9 points from the checkpoints a run folder kept, on the analysis images."""
    run = RunFolder(source.run_dir)
    epochs = sorted(run.epoch_checkpoints())
    records = []
    for epoch in epochs:
        run.restore_weights(source.model, epoch)
        adv = probes.adversarial_examples(source.logits_fn, ctx.images, ctx.labels,
                                          attack=ctx.cfg.attack, seed=ctx.cfg.seed,
                                          batch_size=ctx.batch_size)
        records.append(dict(epoch=epoch, source="test",
                            examples=len(ctx.labels), attack=dataclasses.asdict(ctx.cfg.attack),
                            **probes.record(source.model, ctx.images, adv, ctx.labels,
                                            batch_size=ctx.batch_size)))
    if epochs:  # leave the model as it was loaded: the epoch the run exports
        run.restore_weights(source.model, chosen_epoch(source.run_dir))
    return records


def _training_records(ctx: Context, source) -> List[dict]:
    records = training_probe.read_records(source.run_dir)
    if records:
        print(f"training analyses of {source.name}: {len(records)} epochs recorded during "
              f"training on {records[-1]['examples']} {records[-1]['source']} examples")
        return records
    records = _records_from_checkpoints(ctx, source)
    print(f"training analyses of {source.name}: no analysis/ records (train with "
          f"--analysis_probe=N); computed from the {len(records)} kept checkpoints on "
          f"{len(ctx.labels)} test images")
    return records


def _training(ctx: Context, sources) -> List[pathlib.Path]:
    histories = {s.name: RunFolder(s.run_dir).read_history() for s in sources}
    records = {s.name: _training_records(ctx, s) for s in sources}
    records = {name: r for name, r in records.items() if r}
    curves = {name: {split: quantities.set_means_over_time(records=r, fixed_by_last=fixed)
                     for split, fixed in (("fixed", True), ("own", False))}
              for name, r in records.items()}
    # Panel titles say what each model's points were measured on: probes and checkpoints differ.
    titles = {name: f"{name}: {r[-1]['examples']} {r[-1]['source']} images, "
                    f"PGD-{r[-1]['attack']['steps']}" for name, r in records.items()}
    written = [figures.training_curves(histories, ctx.path("training_curves.png"))]
    if records:
        written.append(figures.set_curves({titles[n]: c for n, c in curves.items()},
                                          ctx.path("training_set_alp.png")))
        written.append(figures.contribution_over_training(
            {titles[n]: [(x["epoch"], x["contribution"]) for x in r] for n, r in records.items()},
            ctx.path("training_contributions.png")))
    written.append(write_json(ctx.path("training.json"), dict(
        ctx.setting(), histories=histories, set_alp=curves,
        contribution_summary={name: {x["epoch"]: tables.describe(np.asarray(x["contribution"]))
                                     for x in r} for name, r in records.items()})))
    return written


ANALYSES.add("contributions", Analysis(_contributions, INTERNALS,
                                       "Fig. 1/7: histograms of the feature contribution (Eq. 5)"))
ANALYSES.add("gradcam", Analysis(_gradcam, INTERNALS,
                                 "Fig. 2/8: Grad-CAM (Eq. 6) of adversarial examples"))
ANALYSES.add("sets", Analysis(_sets, LOGITS, "Tables 1 and 4: consistent / inconsistent sets"))
ANALYSES.add("scatter", Analysis(_scatter, LOGITS, "Fig. 11: clean vs adversarial confidence"))
ANALYSES.add("training", Analysis(_training, RUN_FOLDER,
                                  "Fig. 4, 9, 12: set ALP loss, contributions, convergence"))


def select(names) -> List[str]:
    """`all` -> every analysis; otherwise the names given, each checked against the registry."""
    if list(names) == ["all"]:
        return ANALYSES.names()
    for name in names:
        ANALYSES.get(name)
    return list(dict.fromkeys(names))


def test_images(cfg: AnalysisConfig):
    """The analysed test images (the prefix of --test_examples) as float arrays in [0, 1]."""
    batches, _ = evaluation_batches(cfg.data)
    pairs = [(np.asarray(x), np.asarray(y)) for x, y in batches]
    return np.concatenate([x for x, _ in pairs]), np.concatenate([y for _, y in pairs])


def run_all(cfg: AnalysisConfig) -> List[pathlib.Path]:
    """Loads every model, runs every selected analysis it can serve; returns the written paths."""
    names = select(cfg.what)
    spec = DATASETS.get(cfg.data.dataset)
    images, labels = test_images(cfg)
    sources = [model_sources.load(label, path, spec, check_images=images[:8])
               for label, path in cfg.models]
    for s in sources:
        print(f"model {model_sources.describe(s)}")
    print(f"{len(labels)} {spec.name} test images; PGD-{cfg.attack.steps}, epsilon="
          f"{cfg.attack.epsilon:.6g}, step={cfg.attack.step_size:.6g}")
    ctx = Context(cfg, images, labels, sources)
    written = []
    for name in names:
        entry = ANALYSES.get(name)
        able = []
        for s in sources:
            reason = s.lacks(entry.needs)
            if reason:
                print(f"skipped {name} for {s.name}: {reason}")
            else:
                able.append(s)
        for path in (entry.run(ctx, able) if able else []):
            print(f"wrote {path}")
            written.append(path)
    return written
