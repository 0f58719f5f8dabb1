"""SavedModel export in TF Serving's layout: <export_dir>/<name>/<version>/.

Two signatures, both returning `logits`, `probabilities` and `classes`:
  serving_default   float32 `images` [N, H, W, C] in [0, 1]
  predict_uint8     uint8 `images` [N, H, W, C], raw pixels 0-255
The graph is the model in inference mode, so Guided Dropout (identity at inference) and every
training-only path are absent from it. Each signature checks its input's shape at run time, and
serving_default its pixels' values (finite, in [0, 1]): TF Serving hands the graph whatever
tensor a request holds. An empty batch gets empty outputs. A model with a NaN or infinite
weight is never exported.

A version is written into a hidden temporary folder and renamed into place, so TF Serving, which
watches the model folder for new integer versions, never sees half an export; an existing version
is never overwritten. `assets.extra/tf_serving_warmup_requests` holds a request per signature,
which TF Serving replays while loading the version, so the first real request is not slow. The
optimizer's state stays out: a SavedModel is for inference.

`AdversarialModel.export(path)` writes the same SavedModel (this module registers the writer
in trainer.EXPORT_FORMATS). Export a run's checkpoint from the command line (see
serving/run_export.py):

    python -m aalp_tf.export --model_dir=runs/mnist_aalp [--checkpoint=EPOCH] [--name=NAME]
        [--version=N] [--export_dir=saved_models]
"""
import dataclasses
import json
import os
import pathlib
import shutil
import sys
from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf

from aalp_tf.serving import request_protos
from aalp_tf.errors import UsageError
from aalp_tf.registry import Registry
from aalp_tf.runs import check_writable
from aalp_tf.trainer import EXPORT_FORMATS

CONFIG_ASSET = "aalp_config.json"
SOURCE_ASSET = "aalp_source.json"  # what the export was made from: see find_export
WARMUP_ASSET = "tf_serving_warmup_requests"
INPUT_KEY = "images"


@dataclasses.dataclass(frozen=True)
class InputSignature:
    """What one signature takes: the dtype of `images` and the map to float32 pixels in [0, 1]."""

    dtype: tf.DType
    to_unit_pixels: Callable
    accepts: str


def checked_unit_pixels(images):
    """serving_default's images, once every pixel is known to be finite and in [0, 1].

    Refused, not clipped: unchecked, one inf pixel made every logit NaN (class 0), and a NaN
    pixel or pixels of 0-255 given as floats came back as confident classes. Clipping would
    hide the client's mistake behind a plausible answer; the error names it (InvalidArgument,
    which TF Serving returns to the client).
    """
    accepted = ("accepted: float32 pixels in [0, 1] (0-255 pixels: divide by 255, or send uint8 "
                "to predict_uint8)")
    finite = tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(images)), [
        f"serving_default images must be finite; received: NaN or inf pixels; {accepted}"])
    with tf.control_dependencies([finite]):
        received = tf.strings.format("received: pixels in [{}, {}]; ", (
            tf.reduce_min(images), tf.reduce_max(images)))
        in_range = tf.debugging.Assert(
            tf.reduce_all((images >= 0.0) & (images <= 1.0)),
            [tf.strings.join(["serving_default images must be in [0, 1]; ", received, accepted])])
    with tf.control_dependencies([in_range]):
        return tf.identity(images)


SIGNATURES = Registry("signature")
SIGNATURES.add("serving_default", InputSignature(tf.float32, checked_unit_pixels,
                                                 "float32 images in [0, 1]"))
SIGNATURES.add("predict_uint8", InputSignature(
    tf.uint8, lambda images: tf.cast(images, tf.float32) / 255.0, "uint8 pixels 0-255"))


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


class _WithoutOptimizer(tf.__internal__.tracking.AutoTrackable):
    """The model's object graph minus its optimizer, for the SavedModel.

    Saved as it is, a compiled Keras model brings its optimizer's slots along: Adam's state made
    a LeNet's export four times its weights (3.3 MB for 207k parameters). The children keep the
    model's names, so `tf.train.Checkpoint(model=...)` restores a model from the SavedModel's
    variables (as analysis does) like before.
    """

    def __init__(self, model):
        super().__init__()
        self._children_of = model._trackable_children  # a bound method: not tracked itself

    def _trackable_children(self, save_type="checkpoint", **kwargs):
        children = self._children_of(save_type, **kwargs)
        return {name: child for name, child in children.items() if name != "optimizer"}


class ServingModule(tf.Module):
    """What the SavedModel holds: the model's variables and one tf.function per signature."""

    def __init__(self, model, image_shape: Sequence[int]):
        super().__init__()
        self.model = _WithoutOptimizer(model)
        shape = [None, *image_shape]
        self.functions = {name: self._serve(model, SIGNATURES.get(name), shape)
                          for name in SIGNATURES.names()}
        # Keras 3 variables reached only through `self.model` are saved, but the TF1 loader
        # (TF Serving, saved_model_cli) then fails with "Could not find variable": tracking the
        # tf.Variables the functions capture wires them to the restore op that loader runs.
        captured = [v for fn in self.functions.values()
                    for v in fn.get_concrete_function().variables]
        self.captured_variables = list({id(v): v for v in captured}.values())

    @staticmethod
    def _serve(model, signature: InputSignature, shape):
        def serve(images):
            # Unchecked, a [H, W, C] tensor reaches the convolutions: resnet9 answered it with
            # one row of logits, and a crash inside oneDNN has been reported. Refuse it first.
            images = tf.ensure_shape(images, shape)
            pixels = signature.to_unit_pixels(images)
            # oneDNN's convolution fails on an empty batch ("input depth must be evenly
            # divisible by filter depth"): the model sees one blank image, the answer none.
            count = tf.shape(pixels)[0]
            batch = tf.cond(count > 0, lambda: pixels, lambda: tf.zeros([1, *shape[1:]]))
            return serving_outputs(model(batch, training=False)[:count])

        spec = tf.TensorSpec(shape, signature.dtype, name=INPUT_KEY)
        return tf.function(serve, input_signature=[spec])

    def signatures(self) -> dict:
        return dict(self.functions)


def export_model(model, *, image_shape: Sequence[int], export_dir: str, name: str,
                 version: Optional[int] = None, config_json: Optional[str] = None,
                 warmup_batch_sizes: Sequence[int] = (1,),
                 source: Optional[dict] = None) -> pathlib.Path:
    """Writes the model as `<export_dir>/<name>/<version>/`; returns that path.

    Args:
      model: a Keras model mapping images in [0, 1] to logits.
      image_shape: (H, W, C).
      export_dir, name: where; the version defaults to one past the highest present.
      version: an explicit version; refused if it already exists.
      config_json: the run's config, kept in assets.extra for evaluation and analysis.
      warmup_batch_sizes: one warm-up request per signature and batch size (empty: none).
      source: what the export was made from (e.g. the run folder and its epochs), kept in
        assets.extra so that `find_export` can recognise it.
    """
    root = pathlib.Path(export_dir) / name
    check_writable(root, flag="--export_dir")
    version = next_version(root) if version is None else int(version)
    final = root / str(version)
    if final.exists():
        raise UsageError(f"export {final} already exists; accepted: a new --version "
                         f"(next free: {next_version(root)})")
    return write_saved_model(model, final, image_shape=image_shape, name=name,
                             config_json=config_json, warmup_batch_sizes=warmup_batch_sizes,
                             source=source)


def write_saved_model(model, path, *, image_shape: Sequence[int], name: str,
                      config_json: Optional[str] = None, warmup_batch_sizes: Sequence[int] = (1,),
                      source: Optional[dict] = None) -> pathlib.Path:
    """Writes the SavedModel at `path` exactly (a version folder), through a temporary folder
    beside it and a rename; returns the path.

    Args:
      model: a Keras model mapping images in [0, 1] to logits.
      path: the version folder; refused if it exists.
      image_shape: (H, W, C).
      name: the model's name in the warm-up requests (TF Serving's model name).
      config_json: the run's config, kept in assets.extra for evaluation and analysis.
      warmup_batch_sizes: one warm-up request per signature and batch size (empty: none).
      source: what the export was made from, kept in assets.extra (see find_export).
    """
    check_finite_weights(model)
    final = pathlib.Path(path)
    if final.exists():
        raise UsageError(f"export {final} already exists; accepted: a folder that does not "
                         "exist yet (a new version)")
    root = final.parent
    created_root = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    remove_abandoned_temporaries(root)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"  # not an integer: TF Serving ignores it
    try:
        module = ServingModule(model, image_shape)
        tf.saved_model.save(module, str(tmp), signatures=module.signatures())
        extra = tmp / "assets.extra"
        extra.mkdir(exist_ok=True)
        if config_json is not None:
            (extra / CONFIG_ASSET).write_text(config_json)
        if source is not None:
            (extra / SOURCE_ASSET).write_text(json.dumps(source, sort_keys=True))
        if warmup_batch_sizes:
            write_warmup(extra / WARMUP_ASSET, name=name, image_shape=image_shape,
                         batch_sizes=warmup_batch_sizes)
        _rename_into_place(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if created_root and root.is_dir() and not any(root.iterdir()):
            root.rmdir()  # a failed first export leaves no empty model folder either
    return final


def find_export(export_dir: str, name: str, source: dict) -> Optional[pathlib.Path]:
    """The version of `<export_dir>/<name>` exported from `source`, if one is there.

    A run killed after its version folder was renamed into place and before it recorded the
    export would otherwise export a second version when it is run again.
    """
    root = pathlib.Path(export_dir) / name
    for version in versions(root):
        record = root / str(version) / "assets.extra" / SOURCE_ASSET
        if record.is_file() and json.loads(record.read_text()) == source:
            return root / str(version)
    return None


def check_finite_weights(model) -> None:
    """Refuses, in one line, a model with a NaN or infinite weight: its every answer is NaN."""
    weights = model.weights
    bad = [getattr(w, "path", w.name) for w in weights if not np.all(np.isfinite(w.numpy()))]
    if bad:
        raise UsageError(f"the model's weights are not finite: nothing was exported; received: "
                         f"NaN or inf in {len(bad)} of {len(weights)} variables ("
                         f"{', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); accepted: "
                         "finite weights (export an earlier --checkpoint, or train again with a "
                         "lower --learning_rate or --alpha)")


@EXPORT_FORMATS.register("tf_saved_model")
def export_keras_model(model, filepath, *, verbose=None,
                       warmup_batch_sizes: Sequence[int] = (1,)) -> pathlib.Path:
    """`AdversarialModel.export(filepath)`: the model's SavedModel at `filepath`, named in the
    warm-up requests by its parent folder (saved_models/<name>/<version>, TF Serving's layout),
    with the model's RunConfig when it was built from one (trainer.build_model)."""
    path = pathlib.Path(filepath)
    run_config = getattr(model, "run_config", None)
    written = write_saved_model(
        model, path, image_shape=model.image_shape, name=path.resolve().parent.name or model.name,
        config_json=run_config.to_json() if run_config is not None else None,
        warmup_batch_sizes=warmup_batch_sizes)
    if verbose:
        print(f"exported SavedModel: {written}")
    return written


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_abandoned_temporaries(root: pathlib.Path) -> list:
    """Deletes `.tmp-<version>-<pid>` folders whose writer (on this host) is gone: what an export
    killed mid-write (kill -9, power loss) leaves. Returns what it removed."""
    removed = []
    for path in root.glob(".tmp-*-*"):
        pid = path.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _rename_into_place(tmp: pathlib.Path, final: pathlib.Path) -> None:
    try:
        os.rename(tmp, final)  # atomic; fails if another export took this version meanwhile
    except OSError:
        if not final.exists():
            raise
        raise UsageError(f"export {final} appeared while this export was written; accepted: "
                         f"a new --version (next free: {next_version(final.parent)})") from None


def write_warmup(path: pathlib.Path, *, name: str, image_shape: Sequence[int],
                 batch_sizes: Sequence[int]) -> bool:
    """Writes TF Serving's warm-up records: zeros for every signature and batch size.

    Without the `[serving]` extra the export goes on without them (one line on stderr says so).
    Returns whether the file was written.
    """
    inputs = {signature: {INPUT_KEY: SIGNATURES.get(signature).dtype.as_numpy_dtype}
              for signature in SIGNATURES.names()}
    try:
        request_protos.write_warmup(path, model=name, inputs=inputs,
                                      image_shape=image_shape, batch_sizes=batch_sizes)
    except request_protos.MissingServingApi as err:
        print(f"note: no warm-up requests in the export: {err}", file=sys.stderr)
        return False
    return True


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
