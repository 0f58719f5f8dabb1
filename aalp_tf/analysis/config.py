"""`analyze`'s frozen config and its checks (no TensorFlow, no absl): what
`cli.analysis_config_from_flags` builds once and the runner reads. Beside the analyses it
configures, as comparison/config.py is beside the comparison."""
import dataclasses

from aalp_tf.config import AttackConfig, DataConfig
from aalp_tf.rules import SEED, Rule, check, is_integer


@dataclasses.dataclass(frozen=True)
class AnalysisConfig:
    """What `analyze` reads, computes and writes.

    Attributes:
      models: ((label, path), ...): run folders or SavedModel version folders.
      out: folder for the figures and tables.
      data: the test data (train-side fields unused).
      attack: the PGD adversary of the analyses (the dataset's paper settings by default).
      what: analysis names, or ("all",).
      cam_layer: backbone layer for Grad-CAM ("": the last spatial layer).
      cam_images: test images in the Grad-CAM figure.
      cam_source: "own" (each model's own adversarial examples of the same images) or a label
        from `models` (that model's adversarial examples, shown to every model).
      seed: seed of the PGD random starts.
    """

    models: tuple
    out: str
    data: DataConfig
    attack: AttackConfig
    what: tuple = ("all",)
    cam_layer: str = ""
    cam_images: int = 8
    cam_source: str = "own"
    seed: int = 0

    def __post_init__(self):
        labels = [label for label, _ in self.models]
        check(len(labels) > 0, "--models is empty; accepted: label:path pairs, e.g. "
                               "natural:runs/mnist_natural,aalp:saved_models/mnist_aalp/1")
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        check(not repeated, f"--models names {', '.join(repeated)} more than once; accepted: "
                            "distinct labels")
        Rule("cam_images", "in 1..32", lambda v: is_integer(v) and 1 <= v <= 32).check(
            self.cam_images)
        check(self.cam_source in ["own"] + labels, f"--cam_source={self.cam_source} is not a "
              f"model label; accepted: own, {', '.join(labels)}")
        SEED.check(self.seed)
