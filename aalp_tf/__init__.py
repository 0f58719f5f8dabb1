"""aalp_tf: adversarial training with Adaptive Adversarial Logits Pairing (AALP) in TensorFlow/Keras.

As a library (README, "Use it as a library"):

    import aalp_tf, keras
    model = aalp_tf.AdversarialModel(backbone, num_classes=10, method="aalp", epsilon=8/255,
                                     step_size=2/255, attack_steps=7)
    model.compile(optimizer=keras.optimizers.Adam(1e-4))
    model.fit(train_ds, validation_data=val_ds, epochs=30)
    results = aalp_tf.evaluate(model, test_ds, attacks=["clean", "pgd40", "autoattack"])

"""
import os
import sys

# TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, when it is imported, and on x86 CPUs without
# AVX-512 VNNI/BF16/AMX leaves its oneDNN kernels off; its other CPU kernels may then be built for
# SSE only. On such a CPU oneDNN made our train steps 1.7-2x faster and PGD 1.8x faster
# (benchmarks/RESULTS.md, question 4b). setdefault: an explicit TF_ENABLE_ONEDNN_OPTS=0 wins, and
# nothing changes when TensorFlow was imported before aalp_tf. It only concerns CPU kernels.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"

__all__ = ["AdversarialModel", "BACKBONES", "GuidedDropout", "evaluate", "register_method"]

# name -> (module, attribute) of the public API.
_PUBLIC = {
    "AdversarialModel": ("aalp_tf.trainer", "AdversarialModel"),
    "GuidedDropout": ("aalp_tf.layers", "GuidedDropout"),
    "register_method": ("aalp_tf.methods", "register_method"),
    "BACKBONES": ("aalp_tf.models", "BACKBONES"),
    "evaluate": ("aalp_tf.evaluation.robustness", "evaluate_model"),
}


def _locating_a_command() -> bool:
    """Whether Python imports this package only to find `python -m aalp_tf.<command>`.

    While it locates a -m target, Python has put "-m" in sys.argv[0] (the real path comes
    after); sys.orig_argv still names the target. An ordinary import sees the real argv[0].
    """
    if sys.argv[:1] != ["-m"]:
        return False
    argv = list(getattr(sys, "orig_argv", ()))
    for i, arg in enumerate(argv):
        if arg.startswith("-m"):
            target = arg[2:] or (argv[i + 1] if i + 1 < len(argv) else "")
            return target.startswith(__name__ + ".")
    return False


def __getattr__(name):
    """The public names, imported on first use when the eager import below was skipped."""
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    importlib.import_module("aalp_tf.serving.saved_model")  # AdversarialModel.export's writer
    module, attribute = _PUBLIC[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


# `import aalp_tf` imports the API, hence TensorFlow: keras.models.load_model finds
# AdversarialModel and GuidedDropout (registered with Keras when their modules are imported)
# without custom_objects, and AdversarialModel.export finds its SavedModel writer. A command
# (`python -m aalp_tf.train --help`) imports this package first too and must not wait for
# TensorFlow; it imports what it needs after parsing its flags, and __getattr__ serves these
# names if a module of --imports asks for them.
if not _locating_a_command():
    from aalp_tf.evaluation.robustness import evaluate_model as evaluate  # noqa: E402
    from aalp_tf.layers import GuidedDropout  # noqa: E402
    from aalp_tf.methods import register_method  # noqa: E402
    from aalp_tf.models import BACKBONES  # noqa: E402
    from aalp_tf.serving import saved_model as _saved_model  # noqa: E402,F401 (export's writer)
    from aalp_tf.trainer import AdversarialModel  # noqa: E402
