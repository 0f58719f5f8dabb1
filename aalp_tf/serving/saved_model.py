"""A model's SavedModel in TF Serving's layout: <export_dir>/<name>/<version>/.

The SavedModel itself (signatures, input checks, no optimizer) is the core's
(`aalp_tf.signatures`, what `AdversarialModel.export` writes). What TF Serving adds is here:
- integer versions, the next one by default; an existing version is never overwritten, and a
  version is renamed into place whole (files.atomic_folder), so the server never loads half;
- `assets.extra/tf_serving_warmup_requests`, a request per signature, which TF Serving replays
  while loading the version, so the first real request is not slow;
- `assets.extra/aalp_source.json`: what the export was made from, so a run killed between its
  export and its record finds the version again (`find_export`) instead of exporting twice.

Export a run's checkpoint from the command line (see serving/run_export.py):

    python -m aalp_tf.export --model_dir=runs/mnist_aalp [--epoch=N] [--name=NAME]
        [--version=N] [--export_dir=saved_models]
"""
import json
import pathlib
import sys
from typing import Optional, Sequence

from aalp_tf import signatures
from aalp_tf.errors import UsageError
from aalp_tf.files import atomic_folder, check_writable, remove_abandoned
from aalp_tf.serving import request_protos

SOURCE_ASSET = "aalp_source.json"  # what the export was made from: see find_export
WARMUP_ASSET = "tf_serving_warmup_requests"


def versions(model_root: pathlib.Path) -> list:
    """The integer version folders present under one model's folder."""
    if not model_root.is_dir():
        return []
    return sorted(int(p.name) for p in model_root.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(model_root: pathlib.Path) -> int:
    found = versions(model_root)
    return found[-1] + 1 if found else 1


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
    signatures.check_finite_weights(model)
    created_root = not root.exists()
    remove_abandoned(root)
    try:
        with atomic_folder(final) as tmp:
            signatures.write_into(tmp, model, image_shape=image_shape, config_json=config_json)
            extra = tmp / signatures.EXTRA
            extra.mkdir(exist_ok=True)
            if source is not None:
                (extra / SOURCE_ASSET).write_text(json.dumps(source, sort_keys=True))
            if warmup_batch_sizes:
                write_warmup(extra / WARMUP_ASSET, name=name, image_shape=image_shape,
                             batch_sizes=warmup_batch_sizes)
    except FileExistsError:
        raise UsageError(f"export {final} appeared while this export was written; accepted: "
                         f"a new --version (next free: {next_version(root)})") from None
    finally:
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
        record = root / str(version) / signatures.EXTRA / SOURCE_ASSET
        if record.is_file() and json.loads(record.read_text()) == source:
            return root / str(version)
    return None


def write_warmup(path: pathlib.Path, *, name: str, image_shape: Sequence[int],
                 batch_sizes: Sequence[int]) -> bool:
    """Writes TF Serving's warm-up records: zeros for every signature and batch size.

    Without the `[serving]` extra the export goes on without them (one line on stderr says so).
    Returns whether the file was written.
    """
    table = signatures.SIGNATURES
    inputs = {signature: {signatures.INPUT_KEY: table.get(signature).dtype.as_numpy_dtype}
              for signature in table.names()}
    try:
        request_protos.write_warmup(path, model=name, inputs=inputs,
                                    image_shape=image_shape, batch_sizes=batch_sizes)
    except request_protos.MissingServingApi as err:
        print(f"note: no warm-up requests in the export: {err}", file=sys.stderr)
        return False
    return True
