"""aalp_tf: adversarial training with Adaptive Adversarial Logits Pairing (AALP) in TensorFlow/Keras.

As a library (README, "Use it as a library"):

    import aalp_tf, keras
    model = aalp_tf.AdversarialModel(backbone, num_classes=10, method="aalp", epsilon=8/255,
                                     step_size=2/255, attack_steps=7)
    model.compile(optimizer=keras.optimizers.Adam(1e-4))
    model.fit(train_ds, validation_data=val_ds, epochs=30)
    results = aalp_tf.evaluate_model(model, test_ds, attacks=["clean", "pgd40", "autoattack"])

`import aalp_tf` imports the API, hence TensorFlow, at once: keras.models.load_model then finds
AdversarialModel and GuidedDropout (registered with Keras when their modules are imported)
without custom_objects. Every command (`python -m aalp_tf.train`) imports this package first,
so this is the one place TensorFlow is first imported.
"""
import contextlib
import os
import re
import sys
import tempfile

# TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, when it is imported, and on x86 CPUs without
# AVX-512 VNNI/BF16/AMX leaves its oneDNN kernels off; its other CPU kernels may then be built for
# SSE only. On such a CPU oneDNN made our train steps 1.7-2x faster and PGD 1.8x faster
# (benchmarks/RESULTS.md, question 4b). setdefault: an explicit TF_ENABLE_ONEDNN_OPTS=0 wins, and
# nothing changes when TensorFlow was imported before aalp_tf. It only concerns CPU kernels.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ INFO and WARNING lines stay off

__version__ = "0.1.0"

__all__ = ["AdversarialModel", "BACKBONES", "GuidedDropout", "attack", "evaluate_model",
           "register_method"]

# TensorFlow's libraries log a few notices while they load, before they read
# TF_CPP_MIN_LOG_LEVEL, so that no setting hides them (absl's "not initialised yet" banner, oneDNN
# on, no CUDA driver); without a driver the first look for a GPU then logs cuInit's failure as an
# error. They would come before a command's own first line. What is held back is told by its
# form, not its wording: INFO/WARNING lines in absl's format and absl's banner; errors stay, but
# for cuInit's failure once a line has said that there is no CUDA driver.
_NOTICE = re.compile(rb"^([IW]\d{4} \d\d:\d\d:[\d.]+ +\d+ [\w.]+:\d+\] |WARNING: All log messages "
                     rb"before absl::InitializeLog\(\) is called)")
_NO_DRIVER, _CUINIT = re.compile(rb"\] Could not find cuda drivers"), re.compile(rb"\] failed "
                                                                                 rb"call to cuInit")


def _kept(lines):
    no_driver = False
    for line in lines:
        no_driver = no_driver or bool(_NO_DRIVER.search(line))
        if not (_NOTICE.match(line) or (no_driver and _CUINIT.search(line))):
            yield line


@contextlib.contextmanager
def _without_load_notices():
    """Runs the block with file descriptor 2 (C++ and Python alike) held in a file, then writes
    what it held but the load notices. TF_CPP_MIN_LOG_LEVEL=0 keeps everything."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        yield
        return
    sys.stderr.flush()
    real = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(real, 2)
            os.close(real)
            held.seek(0)
            with open(os.dup(2), "wb") as stderr:  # a buffered file writes all of it
                stderr.writelines(_kept(held))


if "tensorflow" not in sys.modules:  # imported before us: its notices are already out
    with _without_load_notices():
        import tensorflow as _tf

        _tf.config.list_physical_devices("GPU")
    del _tf

from aalp_tf.evaluation.robustness import attack, evaluate_model  # noqa: E402
from aalp_tf.layers import GuidedDropout  # noqa: E402
from aalp_tf.methods import register_method  # noqa: E402
from aalp_tf.models import BACKBONES  # noqa: E402
from aalp_tf.trainer import AdversarialModel  # noqa: E402
