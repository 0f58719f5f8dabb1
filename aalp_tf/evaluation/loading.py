"""Loading a model to evaluate: a SavedModel, through its serving signature alone.

Only the signature is used, so any SavedModel that honours the contract (float32 `images`
[N, H, W, C] in [0, 1] -> `logits`) can be evaluated, ours or not. `load_logits` is the one
entry: it takes a path and gives back (logits_fn, image_shape), where logits_fn maps images to
logits with the model in inference mode and image_shape is (H, W, C), or None when the model
accepts any. Other kinds of file (a .keras file, a foreign SavedModel) belong here too, behind
the same return value.

No trainer, run folder or serving code here: evaluation reads what those wrote.
"""
import pathlib
from typing import Callable, Optional, Tuple

import tensorflow as tf

from aalp_tf.errors import UsageError

LoadedLogits = Tuple[Callable, Optional[tuple]]


def version_folders(folder: pathlib.Path) -> list:
    """Integer subfolders holding a SavedModel: a model folder in TF Serving's layout."""
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir()
                  if p.name.isdigit() and (p / "saved_model.pb").is_file())


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def load_serving_logits(path: str, *, flag: str = "--model") -> LoadedLogits:
    """A SavedModel's serving_default signature as (logits_fn, image_shape).

    Args:
      path: the SavedModel folder (a version folder, e.g. saved_models/mnist_aalp/1).
      flag: the flag the user passed it with, for the one-line errors.
    """
    folder = pathlib.Path(path)
    if not (folder / "saved_model.pb").is_file():
        found = version_folders(folder)
        hint = f" (it holds versions {found}: pass {folder / str(found[-1])})" if found else ""
        raise UsageError(f"{flag} {path} is not a SavedModel folder{hint}; accepted: a folder "
                         "with saved_model.pb, e.g. saved_models/mnist_aalp/1")
    try:
        loaded = tf.saved_model.load(str(folder))
    except Exception as err:  # a corrupt or foreign file: report it in one line
        raise UsageError(f"{flag} {path} could not be loaded as a SavedModel: "
                         f"{_first_line(err)}") from None
    signature = loaded.signatures.get("serving_default")
    if signature is None:
        raise UsageError(f"{flag} {path} has no serving_default signature; accepted: a "
                         "SavedModel exported by aalp_tf or with the same signature")
    inputs = signature.structured_input_signature[1]
    if "images" not in inputs or "logits" not in signature.structured_outputs:
        raise UsageError(f"{flag} {path}: serving_default takes {sorted(inputs)} and returns "
                         f"{sorted(signature.structured_outputs)}; accepted: `images` -> "
                         "`logits`")
    image_shape = tuple(inputs["images"].shape[1:])

    def logits_fn(images):
        return signature(images=images)["logits"]

    logits_fn.loaded = loaded  # keep the variables alive as long as the function
    return logits_fn, image_shape


def load_logits(path: str, *, flag: str = "--model") -> LoadedLogits:
    """The model at `path` as (logits_fn, image_shape): what `evaluate` attacks."""
    return load_serving_logits(path, flag=flag)
