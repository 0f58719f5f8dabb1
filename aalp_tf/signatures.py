"""The SavedModel of a model: its two serving signatures and the writer, with Keras' ExportArchive.

Two signatures, both returning `logits`, `probabilities` and `classes`:
  serving_default   float32 `images` [N, H, W, C] in [0, 1]
  predict_uint8     uint8 `images` [N, H, W, C], raw pixels 0-255
The graph is the model in inference mode, so Guided Dropout (identity at inference) and every
training-only path are absent from it. Each signature checks its input's shape at run time, and
serving_default its pixels' values (finite, in [0, 1]): TF Serving hands the graph whatever
tensor a request holds. An empty batch gets empty outputs. A model with a NaN or infinite
weight is never written.

`keras.export.ExportArchive` tracks the model's variables and nothing else: the optimizer's
slots stay out (Adam's made a LeNet's export four times its weights), and TF1's loader (TF
Serving, saved_model_cli) finds every variable. The variables are the archive's `variables`, in
the order of `model.variables`, so a model rebuilt from its config can take them back.

This is the core's part, what `AdversarialModel.export` writes; `serving.saved_model` puts it
in TF Serving's layout (<export_dir>/<name>/<version>/) and adds the warm-up records.
"""
import dataclasses
import pathlib
from typing import Callable, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from aalp_tf.errors import UsageError
from aalp_tf.files import atomic_folder
from aalp_tf.registry import Registry

INPUT_KEY = "images"
EXTRA = "assets.extra"  # files TF Serving keeps beside the graph but never reads
CONFIG_ASSET = "aalp_config.json"  # the run's config, for analysis and evaluation


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


def serving_outputs(logits):
    return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1),
            "classes": tf.argmax(logits, axis=-1)}


def _endpoint(model, signature: InputSignature, shape):
    def serve(images):
        # Unchecked, a [H, W, C] tensor reaches the convolutions: resnet9 answered it with one
        # row of logits, and a crash inside oneDNN has been reported. Refuse it first.
        images = tf.ensure_shape(images, shape)
        pixels = signature.to_unit_pixels(images)
        # oneDNN's convolution fails on an empty batch ("input depth must be evenly divisible
        # by filter depth"): the model sees one blank image, the answer none.
        count = tf.shape(pixels)[0]
        batch = tf.cond(count > 0, lambda: pixels, lambda: tf.zeros([1, *shape[1:]]))
        return serving_outputs(model(batch, training=False)[:count])

    return serve


def check_finite_weights(model) -> None:
    """Refuses, in one line, a model with a NaN or infinite weight: its every answer is NaN."""
    weights = model.weights
    bad = [getattr(w, "path", w.name) for w in weights if not np.all(np.isfinite(w.numpy()))]
    if bad:
        raise UsageError(f"the model's weights are not finite: nothing was exported; received: "
                         f"NaN or inf in {len(bad)} of {len(weights)} variables ("
                         f"{', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); accepted: "
                         "finite weights (export an earlier --epoch, or train again with a "
                         "lower --learning_rate or --alpha)")


def write_into(folder: pathlib.Path, model, *, image_shape: Sequence[int],
               config_json: Optional[str] = None) -> None:
    """Writes the SavedModel into `folder` (an empty folder, e.g. an `atomic_folder`'s)."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    shape = [None, *image_shape]
    for name in SIGNATURES.names():
        signature = SIGNATURES.get(name)
        archive.add_endpoint(name, _endpoint(model, signature, shape), input_signature=[
            tf.TensorSpec(shape, signature.dtype, name=INPUT_KEY)])
    archive.write_out(str(folder), verbose=False)
    if config_json is not None:
        (folder / EXTRA).mkdir(exist_ok=True)
        (folder / EXTRA / CONFIG_ASSET).write_text(config_json)


def write(model, path, *, image_shape: Sequence[int],
          config_json: Optional[str] = None) -> pathlib.Path:
    """Writes the SavedModel at `path`, a folder that does not exist yet, whole or not at all;
    returns the path."""
    check_finite_weights(model)
    final = pathlib.Path(path)
    try:
        with atomic_folder(final) as tmp:
            write_into(tmp, model, image_shape=image_shape, config_json=config_json)
    except FileExistsError:
        raise UsageError(f"export {final} already exists; accepted: a folder that does not "
                         "exist yet (a new version)") from None
    return final


def restore_variables(model, path) -> None:
    """Puts a SavedModel's variables (written by `write`) into `model`, a model built from
    the same config: same variables in the same order."""
    saved = tf.saved_model.load(str(path)).variables
    mine = model.variables
    if [tuple(v.shape) for v in saved] != [tuple(v.shape) for v in mine]:
        raise UsageError(f"{path} holds {len(saved)} variables of other shapes than the "
                         f"{len(mine)} of the model its config builds")
    for variable, value in zip(mine, saved):
        variable.assign(value)
