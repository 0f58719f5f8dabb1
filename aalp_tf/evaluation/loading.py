"""Loading a model to evaluate: a SavedModel through one serving signature, or a .keras file.

`load_logits` is the one entry: it takes a path and gives back (logits_fn, image_shape), where
logits_fn maps float32 images [N, H, W, C] in [0, 1] to logits with the model in inference mode
and image_shape is (H, W, C), or None when the model accepts any.

A SavedModel need not be ours: its `serving_default` signature must take one image tensor and
return one logits tensor. The keys are inferred when there is one input and one output (a Keras
`model.export(path)` writes `keras_tensor` -> `output_0`); ours are `images` -> `logits`; else the
caller names them (`input_key`, `output_key`). Errors name the argument as the user passed it:
`name` is "--model" from the command, "model" from the library.

No trainer, run folder or serving code here: evaluation reads what those wrote.
"""
import json
import pathlib
import zipfile
from typing import Callable, Optional, Tuple

import keras
import tensorflow as tf

from aalp_tf.errors import UsageError
from aalp_tf.methods import METHODS

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


def _said(name: str, path) -> str:
    """How the error names what the user passed: `--model x` (a flag) or `model='x'`."""
    return f"{name} {path}" if name.startswith("--") else f"{name}={str(path)!r}"


def _pick(keys, wanted: Optional[str], ours: str, *, what: str, option: str, said: str) -> str:
    """The one key of `keys` to use: `wanted`, else ours, else the only one."""
    keys = sorted(keys)
    if wanted:
        if wanted not in keys:
            raise UsageError(f"{said}: serving_default has no {what} {wanted!r}; accepted: "
                             f"{option} one of {keys}")
        return wanted
    if ours in keys:
        return ours
    if len(keys) == 1:
        return keys[0]
    raise UsageError(f"{said}: serving_default has {what}s {keys}, which is the "
                     f"{'images' if what == 'input' else 'logits'}?; accepted: {option} one of "
                     f"{keys}")


def load_serving_logits(path: str, *, name: str = "--model", input_key: Optional[str] = None,
                        output_key: Optional[str] = None) -> LoadedLogits:
    """A SavedModel's serving_default signature as (logits_fn, image_shape).

    Args:
      path: the SavedModel folder (a version folder, e.g. saved_models/mnist_aalp/1).
      name: the flag or argument the user passed it with, for the one-line errors.
      input_key, output_key: the signature's image input and logits output; None: inferred.
    """
    folder = pathlib.Path(path)
    said = _said(name, path)
    if not (folder / "saved_model.pb").is_file():
        found = version_folders(folder)
        hint = f" (it holds versions {found}: pass {folder / str(found[-1])})" if found else ""
        raise UsageError(f"{said} is not a SavedModel folder or a .keras file{hint}; accepted: "
                         "a folder with saved_model.pb (e.g. saved_models/mnist_aalp/1) or a "
                         "file ending in .keras")
    try:
        loaded = tf.saved_model.load(str(folder))
    except Exception as err:  # a corrupt or foreign file: report it in one line
        raise UsageError(f"{said} could not be loaded as a SavedModel: "
                         f"{_first_line(err)}") from None
    signature = loaded.signatures.get("serving_default")
    if signature is None:
        raise UsageError(f"{said} has no serving_default signature (it has "
                         f"{sorted(loaded.signatures)}); accepted: a SavedModel whose "
                         "serving_default takes images and returns logits")
    inputs = signature.structured_input_signature[1]
    if len(inputs) > 1 and not input_key:  # a signature call needs all of them: name them
        raise UsageError(f"{said}: serving_default has inputs {sorted(inputs)}; accepted: a "
                         "signature with one image input (the others cannot be fed), or "
                         f"{'--input_key' if name.startswith('--') else 'input_key='} with the "
                         "image input if the others have defaults")
    option = "--input_key" if name.startswith("--") else "input_key="
    key_in = _pick(inputs, input_key, "images", what="input", option=option, said=said)
    option = "--output_key" if name.startswith("--") else "output_key="
    key_out = _pick(signature.structured_outputs, output_key, "logits", what="output",
                    option=option, said=said)
    shape = inputs[key_in].shape
    if shape.rank != 4:
        raise UsageError(f"{said}: serving_default's input {key_in!r} has shape {shape}; "
                         "accepted: images [N, H, W, C]")
    image_shape = tuple(shape[1:]) if shape[1:].is_fully_defined() else None

    def logits_fn(images):
        return signature(**{key_in: tf.cast(images, inputs[key_in].dtype)})[key_out]

    logits_fn.loaded = loaded  # keep the variables alive as long as the function
    return logits_fn, image_shape


def load_keras_logits(path: str, *, name: str = "--model") -> LoadedLogits:
    """A .keras file as (logits_fn, image_shape). An AdversarialModel in it needs
    `import aalp_tf` first (every command does it): that registers its class with Keras."""
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as err:  # a corrupt file, or a class Keras cannot find
        method = saved_method(path)
        if method is not None:  # a method of the user's own: say to import it
            METHODS.require(method, _said(name, path))
        raise UsageError(f"{_said(name, path)} could not be loaded as a .keras file: "
                         f"{_first_line(err)}") from None
    return keras_logits(model)


def saved_method(path: str) -> Optional[str]:
    """The method of an AdversarialModel saved in a .keras file (its config.json), else None."""
    try:
        with zipfile.ZipFile(path) as archive:
            saved = json.loads(archive.read("config.json"))
        if saved.get("registered_name") == "aalp_tf>AdversarialModel":
            return saved["config"]["method"]
    except (OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile):
        pass  # not ours, or damaged: Keras' own error says what is wrong
    return None


def keras_logits(model) -> LoadedLogits:
    """A Keras model as (logits_fn, image_shape); image_shape None when it is not built."""
    shape = None
    try:
        shape = tuple(model.inputs[0].shape[1:]) if model.inputs else None
    except (AttributeError, ValueError):  # a subclassed model has no symbolic inputs
        shape = None
    if shape is not None and any(d is None for d in shape):
        shape = None
    return (lambda images: model(images, training=False)), shape


def load_logits(path: str, *, name: str = "--model", input_key: Optional[str] = None,
                output_key: Optional[str] = None) -> LoadedLogits:
    """The model at `path` (a SavedModel folder or a .keras file) as (logits_fn, image_shape):
    what `evaluate` attacks."""
    if str(path).endswith(".keras"):
        if not pathlib.Path(path).is_file():
            raise UsageError(f"{_said(name, path)} does not exist; accepted: a .keras file "
                             "or a SavedModel folder")
        return load_keras_logits(str(path), name=name)
    return load_serving_logits(path, name=name, input_key=input_key, output_key=output_key)


def load_arrays(*, images: Optional[str] = None, labels: Optional[str] = None,
                data_file: Optional[str] = None) -> Tuple:
    """The user's own test data: (images, labels) NumPy arrays from --images/--labels .npy
    files or a --data .npz file with `images` and `labels`; checked by the evaluation itself."""
    import numpy as np  # only the command's own-data path reads files

    def read(path, flag):
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise UsageError(f"{flag} {path} could not be read as a NumPy file: "
                             f"{_first_line(err)}") from None

    if data_file:
        arrays = read(data_file, "--data")
        missing = {"images", "labels"} - set(getattr(arrays, "files", []))
        if missing:
            raise UsageError(f"--data {data_file} has no {', '.join(sorted(missing))}: it holds "
                             f"{sorted(getattr(arrays, 'files', []))}; accepted: an .npz with "
                             "`images` and `labels` (np.savez(path, images=x, labels=y))")
        return arrays["images"], arrays["labels"]
    return read(images, "--images"), read(labels, "--labels")
