"""Raw datasets as uint8 arrays: the original distribution files offline, or TFDS.

Each reader returns `ArraySplits` (images NHWC uint8, labels int64) and turns anything a user can
get wrong (a missing folder or file, a wrong magic number, a corrupt or hostile pickle, wrong
shapes) into a one-line `UsageError`. `datasets.py` turns the arrays into tf.data pipelines.
"""
import dataclasses
import gzip
import io
import os
import pickle
import socket
import tarfile
import threading
from typing import Dict, Optional

import numpy as np

from aalp_tf.errors import UsageError

MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
CIFAR10_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")

_MNIST_ACCEPTED = ", ".join(MNIST_FILES) + " (or the same without .gz)"
_CIFAR10_ACCEPTED = (f"{CIFAR10_FOLDER}/, or data_batch_1..5 and test_batch, or {CIFAR10_ARCHIVE}")
_SVHN_ACCEPTED = " and ".join(SVHN_FILES)

# For failing fast offline: the host TFDS downloads each dataset from, and the originals a user
# can pass with --source_dir instead.
_TFDS_ORIGINALS = {
    "mnist": ("storage.googleapis.com", _MNIST_ACCEPTED),
    "cifar10": ("www.cs.toronto.edu", _CIFAR10_ACCEPTED),
    "svhn_cropped": ("ufldl.stanford.edu", _SVHN_ACCEPTED),
}
_REACH_TIMEOUT_S = 3.0


@dataclasses.dataclass(frozen=True)
class ArraySplits:
    """A dataset's train and test splits in memory.

    Attributes:
      x_train: uint8 images [N, H, W, C].
      y_train: int64 labels [N].
      x_test: uint8 images [M, H, W, C].
      y_test: int64 labels [M].
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def __post_init__(self):
        for split, x, y in (("train", self.x_train, self.y_train),
                            ("test", self.x_test, self.y_test)):
            if x.dtype != np.uint8 or x.ndim != 4 or y.dtype != np.int64 or y.shape != x.shape[:1]:
                raise ValueError(f"{split} split must be uint8 [N,H,W,C] images and int64 [N] "
                                 f"labels; received {x.dtype}{list(x.shape)}, "
                                 f"{y.dtype}{list(y.shape)}")


def _folder(source_dir: str, accepted: str) -> str:
    if not os.path.isdir(source_dir):
        raise UsageError(
            f"--source_dir {source_dir} is not a folder; expected a folder with {accepted}")
    return source_dir


# ----------------------------------------------------------------------------------------- MNIST

def _read_idx(path: str, magic: int) -> np.ndarray:
    """Reads one IDX file of unsigned bytes; `magic` is 2051 (images) or 2049 (labels)."""
    try:
        with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as f:
            raw = f.read()
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise UsageError(f"{path} is not a readable MNIST file: {err}") from None
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise UsageError(f"{path} has IDX magic number {found}; expected {magic}")
    ndim = magic & 0xFF  # the magic's low byte counts the dimensions
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    body = raw[4 + 4 * ndim:]
    if len(body) != int(np.prod(shape)):
        raise UsageError(f"{path} holds {len(body)} bytes after its header; "
                         f"its header promises shape {shape}")
    return np.frombuffer(body, np.uint8).reshape(shape)


def _mnist_pair(images: str, labels: str):
    x = _read_idx(images, 2051)
    y = _read_idx(labels, 2049)
    if x.shape[1:] != (28, 28) or len(x) != len(y) or (y > 9).any():
        raise UsageError(f"{images} and {labels} hold images {list(x.shape)} and {len(y)} labels "
                         f"up to {y.max(initial=0)}; expected N 28x28 images and N labels 0..9")
    return x[..., None], y.astype(np.int64)


def read_mnist(source_dir: str) -> ArraySplits:
    """Reads MNIST's four IDX files (gzipped or not) from `source_dir` into [N, 28, 28, 1]."""
    folder = _folder(source_dir, _MNIST_ACCEPTED)
    paths, missing = [], []
    for name in MNIST_FILES:
        found = [p for p in (os.path.join(folder, name), os.path.join(folder, name[:-3]))
                 if os.path.isfile(p)]
        paths.append(found[0] if found else None)
        if not found:
            missing.append(name)
    if missing:
        raise UsageError(f"--source_dir {folder} has no {', '.join(missing)}: "
                         f"MNIST needs {_MNIST_ACCEPTED}")
    x_train, y_train = _mnist_pair(paths[0], paths[1])
    x_test, y_test = _mnist_pair(paths[2], paths[3])
    return ArraySplits(x_train, y_train, x_test, y_test)


# -------------------------------------------------------------------------------------- CIFAR-10

def _latin1_encode(text, encoding="latin1"):
    # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(text, "latin1"); allow only
    # that pure conversion, not the codec machinery in general.
    if encoding != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


try:
    from numpy._core.multiarray import _reconstruct  # numpy >= 2
except ImportError:
    from numpy.core.multiarray import _reconstruct  # numpy 1.x

# The originals name numpy.core (numpy 1.x); numpy 2 writes numpy._core. Both mean one function.
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: these files come from the internet, and
    a pickle that names any other global (e.g. os.system) could run code."""

    def find_class(self, module, name):
        try:
            return _PICKLE_ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"it references the global {module}.{name}") from None


def _cifar_batch(raw: bytes, where: str):
    """Decodes one pickled CIFAR-10 batch into NHWC uint8 images and int64 labels."""
    try:
        # encoding="bytes": the originals are Python 2 pickles whose str keys must stay bytes.
        batch = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
        data, labels = batch[b"data"], np.asarray(batch[b"labels"], np.int64)
    except Exception as err:  # a corrupt pickle can raise almost anything; all mean "not a batch"
        raise UsageError(f"{where} is not a CIFAR-10 python batch ({err}); accepted: a pickled "
                         f"dict of b'data' (a numpy array) and b'labels'") from None
    if (not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2
            or data.shape[1] != 3072 or labels.shape != data.shape[:1] or labels.min(initial=0) < 0
            or labels.max(initial=0) > 9):
        kind = f"{getattr(data, 'dtype', type(data).__name__)}{list(np.shape(data))}"
        raise UsageError(f"{where} holds data {kind} and labels {list(labels.shape)}; "
                         f"expected N x 3072 uint8 and N labels 0..9")
    # Rows are channels-first planes (1024 R, 1024 G, 1024 B); the models want NHWC.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _cifar_from_dir(folder: str) -> Dict[str, tuple]:
    batches = {}
    for name in CIFAR10_BATCHES:
        with open(os.path.join(folder, name), "rb") as f:
            batches[name] = _cifar_batch(f.read(), os.path.join(folder, name))
    return batches


def _cifar_from_tar(archive: str) -> Dict[str, tuple]:
    # One pass over the members, read in memory: a gzip stream cannot seek, and nothing needs to
    # be extracted to disk.
    wanted = {f"{CIFAR10_FOLDER}/{name}": name for name in CIFAR10_BATCHES}
    batches = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                if member.name in wanted and member.isfile():
                    raw = tar.extractfile(member).read()
                    batches[wanted[member.name]] = _cifar_batch(raw, f"{archive}:{member.name}")
    except (OSError, EOFError, tarfile.TarError) as err:
        raise UsageError(f"{archive} is not a readable tar.gz archive: {err}") from None
    missing = [m for m, name in wanted.items() if name not in batches]
    if missing:
        raise UsageError(f"{archive} has no member {', '.join(missing)}; expected "
                         f"{CIFAR10_FOLDER}/data_batch_1..5 and {CIFAR10_FOLDER}/test_batch")
    return batches


def _cifar_batches(folder: str) -> Dict[str, tuple]:
    """Reads name -> (images, labels) from whichever accepted layout `folder` holds."""
    for candidate in (os.path.join(folder, CIFAR10_FOLDER), folder):
        if all(os.path.isfile(os.path.join(candidate, b)) for b in CIFAR10_BATCHES):
            return _cifar_from_dir(candidate)
    if os.path.isfile(os.path.join(folder, CIFAR10_ARCHIVE)):
        return _cifar_from_tar(os.path.join(folder, CIFAR10_ARCHIVE))
    raise UsageError(f"--source_dir {folder} has no CIFAR-10 batches; expected {_CIFAR10_ACCEPTED}")


def read_cifar10(source_dir: str) -> ArraySplits:
    """Reads CIFAR-10's python batches into [N, 32, 32, 3].

    Args:
      source_dir: a folder holding `cifar-10-batches-py/`, or the batch files themselves, or
        `cifar-10-python.tar.gz` (read in place).
    """
    batches = _cifar_batches(_folder(source_dir, _CIFAR10_ACCEPTED))
    train = [batches[name] for name in CIFAR10_BATCHES[:-1]]
    x_test, y_test = batches[CIFAR10_BATCHES[-1]]
    return ArraySplits(np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]),
                       x_test, y_test)


# ------------------------------------------------------------------------------------------ SVHN

def _svhn_split(path: str):
    import scipy.io  # only SVHN needs scipy; keep it out of every other import
    try:
        mat = scipy.io.loadmat(path)
    except FileNotFoundError:
        raise UsageError(f"--source_dir {os.path.dirname(path)} has no {os.path.basename(path)}: "
                         f"SVHN needs {_SVHN_ACCEPTED}") from None
    except Exception as err:  # scipy raises ValueError, MatReadError, NotImplementedError (v7.3)...
        raise UsageError(f"{path} is not a readable MATLAB v5 file: {err}") from None
    x, y = mat.get("X"), mat.get("y")
    if (not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray) or x.dtype != np.uint8
            or x.shape[:3] != (32, 32, 3) or x.ndim != 4 or y.size != x.shape[3]
            or y.min(initial=1) < 1 or y.max(initial=1) > 10):
        shapes = [list(v.shape) if isinstance(v, np.ndarray) else None for v in (x, y)]
        raise UsageError(f"{path} holds X {shapes[0]} and y {shapes[1]}; "
                         f"expected X 32x32x3xN uint8 and y Nx1 with values 1..10")
    # Format 2 labels the digit 0 as 10.
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2)), y.reshape(-1).astype(np.int64) % 10


def read_svhn(source_dir: str) -> ArraySplits:
    """Reads SVHN cropped digits (format 2 .mat files) into [N, 32, 32, 3], labels 0..9."""
    folder = _folder(source_dir, _SVHN_ACCEPTED)
    x_train, y_train = _svhn_split(os.path.join(folder, SVHN_FILES[0]))
    x_test, y_test = _svhn_split(os.path.join(folder, SVHN_FILES[1]))
    return ArraySplits(x_train, y_train, x_test, y_test)


# ------------------------------------------------------------------------------------------ TFDS

def network_reachable(host: str, port: int = 443, timeout: float = _REACH_TIMEOUT_S) -> bool:
    """True when a TCP connection to host:port opens within `timeout` seconds (DNS included)."""
    result = []

    def connect():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            pass

    # The socket timeout does not bound the DNS lookup, so the thread's join does.
    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(result)


def _tfds_prepared(builder) -> bool:
    # Check existence first: is_prepared() logs a warning for a folder that is not there.
    return builder.data_path.exists() and builder.is_prepared()


def read_tfds(tfds_name: str, *, data_dir: Optional[str] = None) -> ArraySplits:
    """Loads a TFDS dataset's train and test splits into memory.

    Offline, TFDS would retry a download for minutes; instead, when the dataset is not prepared
    in `data_dir` and its download host is unreachable, this raises UsageError within seconds.

    Args:
      tfds_name: the TFDS name (mnist, cifar10, svhn_cropped).
      data_dir: TFDS data_dir; None means TFDS' default (~/tensorflow_datasets).
    """
    import tensorflow_datasets as tfds  # slow to import, and not needed with --source_dir

    builder = tfds.builder(tfds_name, data_dir=data_dir, try_gcs=False)
    host, originals = _TFDS_ORIGINALS.get(tfds_name,
                                          ("storage.googleapis.com", "its original files"))
    if not _tfds_prepared(builder) and not network_reachable(host):
        raise UsageError(
            f"TFDS dataset {tfds_name} is not prepared in {builder.data_dir_root} and the network "
            f"is unreachable ({host}:443): prepare it on a machine with internet and copy it "
            f"there, or pass --source_dir=DIR holding the original files: {originals}")
    splits: Dict[str, tuple] = {}
    for split in ("train", "test"):
        x, y = tfds.as_numpy(tfds.load(tfds_name, split=split, batch_size=-1, as_supervised=True,
                                       data_dir=data_dir, try_gcs=False))
        splits[split] = (np.asarray(x, np.uint8), np.asarray(y, np.int64))
    return ArraySplits(*splits["train"], *splits["test"])
