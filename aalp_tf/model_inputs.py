"""What the Python API (`aalp_tf.AdversarialModel`) takes, checked before it trains on it.

Arguments and backbones are refused at construction, batches when `fit` traces its step: one
line saying what came in and what is accepted, Keras' own words ("Invalid value received for
argument ..."), so a mistake fails before the first step instead of training on nonsense. Apart
from the model (trainer.py), which keeps Keras' model and its step.
"""
import contextlib

import keras
import tensorflow as tf

from aalp_tf import rules
from aalp_tf.config import AttackConfig, MethodConfig
from aalp_tf.errors import invalid_argument
from aalp_tf.methods import METHODS

# The arguments' rules are the settings' own (rules.py), which the configs check too; these two
# belong to the Python API only.
_NUM_CLASSES = rules.integer("num_classes", 2)
_WARMUP_STEPS = rules.integer("epsilon_warmup_steps", 0, " (0: off)")
# Activations that turn logits into probabilities: the model's own logits layer comes after the
# backbone, so a backbone ending in one trains a classifier on probabilities.
_PROBABILITIES = ("softmax", "sigmoid", "log_softmax")


def check_arguments(*, method, num_classes, epsilon, step_size, attack_steps, alpha,
                    trades_beta, seed, val_attack_steps, epsilon_warmup_steps, norm,
                    adversary) -> None:
    """AdversarialModel's keyword arguments, refused in one line when out of range: the configs
    they make check theirs, in the words of the command line's checks ("epsilon must be in
    (0, 1] ...; received: 2.0")."""
    names = METHODS.names()
    with rules.keyword_arguments():
        rules.Rule("method", f"one of {', '.join(names)} (or one added with "
                   "aalp_tf.register_method)", lambda v: isinstance(v, str) and v in names
                   ).check(method)
        _NUM_CLASSES.check(num_classes)
        AttackConfig(epsilon=epsilon, step_size=step_size, steps=attack_steps, norm=norm,
                     adversary=adversary)
        MethodConfig(name=method, alpha=alpha, trades_beta=trades_beta)
        rules.SEED.check(seed)
        rules.VAL_ATTACK_STEPS.check(val_attack_steps)
        _WARMUP_STEPS.check(epsilon_warmup_steps)


def check_features(backbone, shape) -> None:
    """A backbone must return one [N, F] tensor: the features the logits layer reads."""
    shapes = shape if isinstance(shape, list) else [shape]
    if len(shapes) != 1 or len(shapes[0]) != 2:
        shown = ", ".join(str(tuple(s)) for s in shapes)
        raise invalid_argument(
            "backbone", "a model returning features of shape [N, F] (end it with e.g. "
            "keras.layers.Flatten() or keras.layers.GlobalAveragePooling2D())",
            f"backbone {backbone.name!r} returning shape {shown}")


def static_output_shape(backbone):
    """The backbone's output shape(s) when it knows them before any call (functional,
    Sequential with an Input), else None."""
    try:
        outputs = backbone.outputs
    except (AttributeError, ValueError):
        return None
    return [tuple(o.shape) for o in outputs] if outputs else None


def _activation_name(layer) -> str:
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "") if callable(activation) else ""


def check_head(backbone, num_classes) -> None:
    """A backbone is the features, not a classifier: the model adds its own logits layer, so a
    classifier passed whole would get a second one on top of its probabilities or logits (and
    the pairing term would compare probabilities). Only layers in order say which is last:
    Sequential and functional backbones; a subclassed one is not looked at."""
    known = isinstance(backbone, keras.Sequential) or static_output_shape(backbone) is not None
    if not known or not backbone.layers:
        return
    last = backbone.layers[-1]
    how = ("a backbone ending in its features, not in a classifier's output (for a classifier, "
           "pass keras.Model(classifier.inputs, classifier.layers[-2].output))")
    activation = _activation_name(last)
    if activation in _PROBABILITIES:
        raise invalid_argument("backbone", how, f"backbone {backbone.name!r} whose last layer "
                               f"{last.name!r} has activation {activation!r}")
    if isinstance(last, keras.layers.Dense) and last.units == num_classes:
        raise invalid_argument("backbone", how, f"backbone {backbone.name!r} whose last layer "
                               f"{last.name!r} is Dense({last.units}), num_classes={num_classes}")


def _channels_first(shape) -> bool:
    """[N, C, H, W] with C of 1 or 3 and H, W larger than any channel count: PyTorch's layout."""
    return len(shape) == 4 and shape[1] in (1, 3) and all(
        isinstance(d, int) and d > 4 for d in shape[2:])


def _channels_last_text(shape) -> str:
    return (f"keras.Input({(*shape[2:], shape[1])}); transpose NCHW data with "
            "np.transpose(x, (0, 2, 3, 1))")


def check_channels_last(backbone) -> None:
    """Images are [N, H, W, C]: a keras.Input((C, H, W)) (PyTorch's layout) would make Keras read
    H as the channels and train on columns, or fail deep in an attack."""
    try:
        inputs = backbone.inputs
    except (AttributeError, ValueError):
        return
    shape = tuple(inputs[0].shape) if inputs else ()
    if _channels_first(shape):
        raise invalid_argument(
            "backbone", f"a backbone taking images [H, W, C], channels last (e.g. "
            f"{_channels_last_text(shape)})",
            f"backbone {backbone.name!r} whose keras.Input has shape {shape[1:]}, channels first")


def check_images_channels_last(input_shape) -> None:
    """The same for a backbone without an Input, which the first batch builds (fit, evaluate,
    build): NCHW images would build it over (C, H) with W channels, and it would train, evaluate
    and export on that."""
    shape = tuple(input_shape)
    if _channels_first(shape):
        raise invalid_argument(
            "x", f"images [N, H, W, C], channels last (e.g. {_channels_last_text(shape)})",
            f"images of shape {shape}, channels first")


@contextlib.contextmanager
def retraced_after_a_refusal(model):
    """A batch refused while Keras traces the step (above) leaves that trace half done, with
    the model's variables created inside it: the next `fit` on corrected data would trace the
    same tf.function again and fail in Keras' words ("Creating variables on a non-first call").
    Dropping Keras' compiled functions after any failure lets the next call trace afresh."""
    try:
        yield
    except Exception:
        model.train_function = model.test_function = model.predict_function = None
        raise


def _checked(tensor, condition, message: str):
    """`tensor`, after an in-graph check that fails with `message` when `condition` is false."""
    with tf.control_dependencies([tf.debugging.Assert(condition, [message])]):
        return tf.identity(tensor)


def unpack(data, num_classes):
    """(float32 images, labels [N], sample weights or None) of a batch, checked when traced:
    float images and integer labels ([N] or [N, 1]), so a wrong input fails before the first
    step instead of training on nonsense."""
    images, labels, weights = keras.utils.unpack_x_y_sample_weight(data)
    images = tf.convert_to_tensor(images)
    if not images.dtype.is_floating:
        raise invalid_argument("x", "float images in [0, 1] (divide uint8 pixels by 255)",
                               f"x of dtype {images.dtype.name}")
    check_images_channels_last(images.shape)  # here, not when the attack first calls the model
    images = tf.cast(images, tf.float32)  # the attacks' perturbations are float32
    if labels is None:
        raise invalid_argument("y", "integer class ids [N]: fit and evaluate need labels",
                               "y=None")
    labels = tf.convert_to_tensor(labels)
    if not labels.dtype.is_integer or labels.shape.rank not in (1, 2) or (
            labels.shape.rank == 2 and labels.shape[-1] != 1):
        raise invalid_argument("y", "integer class ids of shape [N] or [N, 1] (not one-hot)",
                               f"y of dtype {labels.dtype.name} and shape {labels.shape}")
    labels = tf.reshape(labels, [-1])
    # Values are checked in the graph, on every batch: images outside [0, 1] (pixels not
    # divided by 255) or NaN would be clipped by the attacks into nonsense and train on it
    # silently. Two reductions per batch, nothing beside the attack's gradient passes.
    images = _checked(images, tf.reduce_all((images >= 0.0) & (images <= 1.0)),
                      "Invalid value received for argument `x`. Expected float images in "
                      "[0, 1] (divide uint8 pixels by 255). Received: a batch with values "
                      "outside [0, 1], or NaN")
    labels = _checked(labels, tf.reduce_all((labels >= 0) & (labels < num_classes)),
                      "Invalid value received for argument `y`. Expected class ids in "
                      f"[0, {num_classes}). Received: a batch with a label outside them")
    if weights is not None:
        weights = tf.reshape(tf.cast(weights, tf.float32), [-1])
    return images, labels, weights
