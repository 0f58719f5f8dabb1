"""TF Serving's configuration files for a folder of exports.

`models.config` (a ModelServerConfig text proto) names every model folder that holds a version,
so one server answers all of them; `batching.config` (BatchingParameters) turns on server-side
batching with values meant for CPUs.
"""
import os
import pathlib
from typing import List, Optional, Tuple

from google.protobuf import text_format

from aalp_tf.serving import saved_model
from aalp_tf.errors import UsageError
from aalp_tf.serving.request_protos import serving_api

MODELS_CONFIG = "models.config"
BATCHING_CONFIG = "batching.config"

# Server-side batching on a CPU: requests that arrive within 1 ms of each other share one run,
# up to 64 images; one batch thread per core. TF Serving's guide suggests starting here and
# tuning batch_timeout_micros against the latency the clients accept.
BATCHING = {"max_batch_size": 64, "batch_timeout_micros": 1000, "max_enqueued_batches": 100}


def model_folders(folder: pathlib.Path) -> List[str]:
    """Names of the model folders under `folder` that hold at least one SavedModel version."""
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder; accepted: the export folder, e.g. "
                         "saved_models/")
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and any(
        (p / str(v) / "saved_model.pb").is_file() for v in saved_model.versions(p)))


def models_config(folder: pathlib.Path, *, base_path: Optional[str] = None) -> str:
    """The ModelServerConfig text proto serving every model under `folder`.

    Args:
      folder: the export folder (saved_models/).
      base_path: that folder as the server sees it (e.g. /models in a container); default:
        its absolute path here.
    """
    names = model_folders(folder)
    if not names:
        raise UsageError(f"{folder} holds no exported model; accepted: a folder of "
                         "<name>/<version>/saved_model.pb, e.g. saved_models/ after training")
    config_pb2 = serving_api("config.model_server_config_pb2")
    base = (base_path or str(folder.resolve())).rstrip("/")
    config = config_pb2.ModelServerConfig()
    for name in names:
        entry = config.model_config_list.config.add()
        entry.name = name
        entry.base_path = f"{base}/{name}"
        entry.model_platform = "tensorflow"
    return text_format.MessageToString(config)


def batching_config(*, threads: Optional[int] = None) -> str:
    """BatchingParameters as text, for --enable_batching --batching_parameters_file."""
    values = dict(BATCHING, num_batch_threads=threads or os.cpu_count() or 1)
    return "".join(f"{key} {{ value: {value} }}\n" for key, value in values.items())


def write_configs(folder: pathlib.Path, *, base_path: Optional[str] = None
                  ) -> Tuple[pathlib.Path, pathlib.Path]:
    """Writes models.config and batching.config into `folder`; returns their paths."""
    models = folder / MODELS_CONFIG
    models.write_text(models_config(folder, base_path=base_path))
    batching = folder / BATCHING_CONFIG
    batching.write_text(batching_config())
    return models, batching


def server_command(folder: pathlib.Path, *, base_path: Optional[str] = None) -> str:
    """The command that serves `folder`'s config: docker when base_path is /models, else the
    tensorflow_model_server binary on this machine."""
    if base_path and base_path.rstrip("/") == "/models":
        return (f'docker run --rm -p 8500:8500 -p 8501:8501 -v "{folder.resolve()}:/models" '
                "tensorflow/serving --model_config_file=/models/models.config "
                "--enable_batching --batching_parameters_file=/models/batching.config")
    where = folder.resolve()
    return ("tensorflow_model_server --port=8500 --rest_api_port=8501 "
            f"--model_config_file={where / MODELS_CONFIG} "
            f"--enable_batching --batching_parameters_file={where / BATCHING_CONFIG}")
