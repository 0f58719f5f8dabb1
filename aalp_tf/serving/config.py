"""The frozen configs of serving's two commands and their checks (no TensorFlow, no absl):
`python -m aalp_tf.export` (ExportConfig) and `python -m aalp_tf.serving predict`
(PredictConfig), built once by the cli and read by run_export.py and client.py."""
import dataclasses
from typing import Optional

from aalp_tf.rules import INT32_MAX, MAX_TIMEOUT, Rule, check, is_integer, number


def _version(unset: str) -> Rule:
    return Rule("version", f"an integer >= 1 (unset: {unset})",
                lambda v: v is None or (is_integer(v) and v >= 1))


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """Which checkpoint of a run `python -m aalp_tf.export` writes, and where.

    Attributes:
      model_dir: the run folder (config.json, checkpoints/).
      epoch: the epoch whose checkpoint is exported (0: the one --export_epoch picks).
      export_dir: None: the run's own export_dir.
      name: the model folder ("": the run's export name, <dataset>_<method>).
      version: None: one past the highest version present.
      warmup_batch_sizes: a warm-up request per signature and batch size (empty: none).
    """

    model_dir: str
    epoch: int = 0
    export_dir: Optional[str] = None
    name: str = ""
    version: Optional[int] = None
    warmup_batch_sizes: tuple = (1,)

    def __post_init__(self):
        Rule("epoch", "an epoch >= 1 (0: as --export_epoch picks)",
             lambda v: is_integer(v) and v >= 0).check(self.epoch)
        _version("the next free one").check(self.version)
        Rule("warmup_batch_sizes", "batch sizes >= 1", lambda sizes: all(
            is_integer(b) and 1 <= b <= INT32_MAX for b in sizes)).check(self.warmup_batch_sizes)


@dataclasses.dataclass(frozen=True)
class PredictConfig:
    """One Predict request of `python -m aalp_tf.serving predict`.

    Attributes:
      server: HOST:PORT of TF Serving's gRPC port (REST port with `rest`).
      model: the served model's name.
      images: .npy file, [N, H, W, C] float in [0, 1] or uint8.
      rest: POST /v1/models/<model>:predict instead of gRPC.
      signature: a signature name, or "auto" (uint8 images: predict_uint8, else serving_default).
      version: None: the server's latest version.
      timeout: seconds to wait for the answer.
    """

    server: str
    model: str
    images: str
    rest: bool = False
    signature: str = "auto"
    version: Optional[int] = None
    timeout: float = 10.0

    def __post_init__(self):
        host, _, port = self.server.rpartition(":")
        check(bool(host) and port.isdigit() and 0 < int(port) < 65536,
              f"--server must be HOST:PORT; received: {self.server!r}")
        check(bool(self.model), "--model_name is not set: pass the served model's name, e.g. "
                                "--model_name=mnist_aalp")
        check(bool(self.images), "--images is not set: pass a .npy file of images [N, H, W, C]")
        number("timeout", 0, MAX_TIMEOUT, open_low=True, suffix=" seconds").check(self.timeout)
        _version("the server's latest").check(self.version)
