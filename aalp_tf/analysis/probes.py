"""Measurements of a model on a set of images, for the analyses and the training callback.

Everything runs the model in inference mode (Guided Dropout is then the identity) in batches, and
returns NumPy arrays over all the images. The gradients are those of the softmax cross-entropy
with the true label: dCE/dA_fc for Eq. 5, dCE/dA_i at a conv layer for Eq. 6.
"""
from typing import Callable, Dict, List, Tuple

import keras
import numpy as np
import tensorflow as tf

from aalp_tf import attacks, losses
from aalp_tf.analysis import quantities
from aalp_tf.config import AttackConfig
from aalp_tf.errors import UsageError


def _slices(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


def adversarial_examples(logits_fn: Callable, images, labels, *, attack: AttackConfig,
                         seed: int = 0, batch_size: int = 128) -> np.ndarray:
    """PGD (cross-entropy, true labels; the last iterate) against logits_fn, batch by batch.

    Batch b starts from the random point seeded by (seed, b), so the same call gives the same
    examples.
    """
    out = []
    for b, part in enumerate(_slices(len(images), batch_size)):
        x = tf.constant(images[part], tf.float32)
        y = tf.constant(labels[part], tf.int64)
        out.append(attacks.pgd(logits_fn, x, y, epsilon=attack.epsilon,
                               step_size=attack.step_size, steps=attack.steps,
                               random_start=attack.random_start,
                               seed=tf.constant([seed, b], tf.int64)).numpy())
    return np.concatenate(out)


def logits(logits_fn: Callable, images, *, batch_size: int = 128) -> np.ndarray:
    return np.concatenate([np.asarray(logits_fn(tf.constant(images[part], tf.float32)))
                           for part in _slices(len(images), batch_size)])


def measures(logits_fn: Callable, images, adv_images, labels, *,
             batch_size: int = 128) -> Dict[str, np.ndarray]:
    """quantities.per_example_measures of the clean and adversarial images."""
    return quantities.per_example_measures(
        clean_logits=logits(logits_fn, images, batch_size=batch_size),
        adv_logits=logits(logits_fn, adv_images, batch_size=batch_size),
        labels=np.asarray(labels))


def feature_gradients(model, images, labels, *, batch_size: int = 128) -> np.ndarray:
    """dCE/dA_fc per example, [N, F]: the input of Eq. 5.

    Args:
      model: a trainer.AdversarialModel (backbone -> A_fc, then the logits layer).
      images, labels: [N, H, W, C] in [0, 1] and [N].
    """
    out = []
    for part in _slices(len(images), batch_size):
        features = model.backbone(tf.constant(images[part], tf.float32), training=False)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(features)
            total = tf.reduce_sum(losses.cross_entropy(
                logits=model.logits_from_features(features), labels=labels[part]))
        out.append(tape.gradient(total, features).numpy())
    return np.concatenate(out)


def cam_layer_names(backbone) -> List[str]:
    """Layers Grad-CAM can use: every layer with a spatial [N, h, w, C] output except pooling."""
    return [layer.name for layer in backbone.layers
            if len(layer.output.shape) == 4 and "pool" not in type(layer).__name__.lower()
            and not isinstance(layer, keras.layers.InputLayer)]


def resolve_cam_layer(backbone, name: str = "") -> str:
    """`name` if the backbone has it as a spatial layer; "" picks the last one (nearest A_fc)."""
    names = cam_layer_names(backbone)
    if not name:
        return names[-1]
    if name not in names:
        raise UsageError(f"--cam_layer: {backbone.name} has no spatial layer {name!r}; "
                         f"accepted: {', '.join(names)}")
    return name


def layer_gradients(model, layer_name: str, images, labels, *,
                    batch_size: int = 128) -> Tuple[np.ndarray, np.ndarray]:
    """(A_i, dCE/dA_i) at a backbone layer, each [N, h, w, C]: the inputs of Eq. 6."""
    backbone = model.backbone
    probe = keras.Model(backbone.inputs, [backbone.get_layer(layer_name).output,
                                          backbone.outputs[0]])
    acts, grads = [], []
    for part in _slices(len(images), batch_size):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            x = tf.constant(images[part], tf.float32)
            tape.watch(x)  # records the forward pass, so the inner activation has a gradient
            activation, features = probe(x, training=False)
            total = tf.reduce_sum(losses.cross_entropy(
                logits=model.logits_from_features(features), labels=labels[part]))
        grads.append(tape.gradient(total, activation).numpy())
        acts.append(activation.numpy())
    return np.concatenate(acts), np.concatenate(grads)


def grad_cam_maps(model, layer_name: str, images, labels, *, batch_size: int = 128):
    """Eq. 6 at `layer_name`, upsampled to the image size, each scaled to a maximum of 1.

    Returns:
      [N, H, W] float maps in [0, 1].
    """
    activations, gradients = layer_gradients(model, layer_name, images, labels,
                                             batch_size=batch_size)
    maps = quantities.grad_cam(gradients=gradients, activations=activations)
    return quantities.upsample_maps(maps=maps, size=images.shape[1:3]).numpy()


def record(model, images, adv_images, labels, *, batch_size: int = 128) -> dict:
    """One point of the training analyses (Fig. 4, Fig. 9) on a fixed set of images.

    Returns:
      {"measures": {name: [N] list}, "contribution": [F] list (Eq. 5 on the adversarial
      images)}, JSON-ready.
    """
    m = measures(model.inference_logits, images, adv_images, labels, batch_size=batch_size)
    c = quantities.contribution(feature_gradients=feature_gradients(
        model, adv_images, labels, batch_size=batch_size))
    return {"measures": jsonable(m), "contribution": np.round(c.numpy(), 9).tolist()}


def jsonable(measures: Dict[str, np.ndarray]) -> Dict[str, list]:
    """Per-example measures as JSON lists (7 decimals: the files stay small)."""
    return {k: v.tolist() if v.dtype == bool else np.round(v, 7).tolist()
            for k, v in measures.items()}
