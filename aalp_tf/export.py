"""SavedModel export in TF Serving's layout: <export_dir>/<name>/<version>/.

The `serving_default` signature takes float32 `images` [N, H, W, C] in [0, 1] and returns
`logits`, `probabilities` and `classes`. The graph is the model in inference mode, so Guided
Dropout (identity at inference) and every training-only path are absent from it.

A version is written into a hidden temporary folder and renamed into place, so TF Serving, which
watches the model folder for new integer versions, never sees half an export; an existing version
is never overwritten.
"""
import os
import pathlib
import shutil
from typing import Optional, Sequence

import tensorflow as tf

from aalp_tf.errors import UsageError

CONFIG_ASSET = "aalp_config.json"


def versions(model_root: pathlib.Path) -> list:
    """The integer version folders present under one model's folder."""
    if not model_root.is_dir():
        return []
    return sorted(int(p.name) for p in model_root.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(model_root: pathlib.Path) -> int:
    found = versions(model_root)
    return found[-1] + 1 if found else 1


def serving_outputs(logits):
    return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1),
            "classes": tf.argmax(logits, axis=-1)}


class ServingModule(tf.Module):
    """What the SavedModel holds: the model's variables and its inference signatures."""

    def __init__(self, model, image_shape: Sequence[int]):
        super().__init__()
        self.model = model
        spec = tf.TensorSpec([None, *image_shape], tf.float32, name="images")

        def serve(images):
            images = tf.ensure_shape(images, [None, *image_shape])
            return serving_outputs(self.model(images, training=False))

        self.serve = tf.function(serve, input_signature=[spec])

    def signatures(self) -> dict:
        return {"serving_default": self.serve}


def export_model(model, *, image_shape: Sequence[int], export_dir: str, name: str,
                 version: Optional[int] = None, config_json: Optional[str] = None
                 ) -> pathlib.Path:
    """Writes the model as `<export_dir>/<name>/<version>/`; returns that path.

    Args:
      model: a Keras model mapping images in [0, 1] to logits.
      image_shape: (H, W, C).
      export_dir, name: where; the version defaults to one past the highest present.
      version: an explicit version; refused if it already exists.
      config_json: the run's config, kept in assets.extra for evaluation and analysis.
    """
    root = pathlib.Path(export_dir) / name
    version = next_version(root) if version is None else int(version)
    final = root / str(version)
    if final.exists():
        raise UsageError(f"export {final} already exists; accepted: a new --version "
                         f"(next free: {next_version(root)})")
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{version}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        module = ServingModule(model, image_shape)
        tf.saved_model.save(module, str(tmp), signatures=module.signatures())
        if config_json is not None:
            extra = tmp / "assets.extra"
            extra.mkdir(exist_ok=True)
            (extra / CONFIG_ASSET).write_text(config_json)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def load_serving_logits(path: str):
    """Loads a SavedModel and returns (logits_fn, image_shape) from its serving_default signature.

    Only the signature is used, so any model that honours the contract (float32 `images` in
    [0, 1] -> `logits`) can be evaluated, ours or not.
    """
    folder = pathlib.Path(path)
    if not (folder / "saved_model.pb").is_file():
        hint = ""
        if folder.is_dir() and versions(folder):
            hint = f" (it holds versions {versions(folder)}: pass {folder / str(versions(folder)[-1])})"
        raise UsageError(f"--model {path} is not a SavedModel folder{hint}; accepted: a folder "
                         "with saved_model.pb, e.g. saved_models/mnist_aalp/1")
    try:
        loaded = tf.saved_model.load(str(folder))
    except Exception as err:  # a corrupt or foreign file: report it in one line
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"--model {path} could not be loaded as a SavedModel: {first_line}"
                         ) from None
    signature = loaded.signatures.get("serving_default")
    if signature is None:
        raise UsageError(f"--model {path} has no serving_default signature; accepted: a "
                         "SavedModel exported by aalp_tf or with the same signature")
    inputs = signature.structured_input_signature[1]
    if "images" not in inputs or "logits" not in signature.structured_outputs:
        raise UsageError(f"--model {path}: serving_default takes {sorted(inputs)} and returns "
                         f"{sorted(signature.structured_outputs)}; accepted: `images` -> "
                         "`logits`")
    image_shape = tuple(inputs["images"].shape[1:])

    def logits_fn(images):
        return signature(images=images)["logits"]

    logits_fn.loaded = loaded  # keep the variables alive as long as the function
    return logits_fn, image_shape
