"""The paper's analysis quantities as pure functions (§2, §4.4-4.5).

Eq. 5 (feature contribution) and Eq. 6 (Grad-CAM) take gradients and activations a caller has
already computed (see `probes.py`), so they are a few lines of math each. The consistent /
inconsistent split and the per-set statistics of Table 1 work on per-example NumPy arrays, so
the same code serves a whole test set, a probe slice during training, or a hand-made case.

Loss in Eq. 5 and Eq. 6: the softmax cross-entropy with the true label (the classification loss
whose gradient the paper's Taylor argument, Eq. 2-4, is about).
"""
from typing import Dict

import numpy as np
import tensorflow as tf

from aalp_tf import losses

CONSISTENT, INCONSISTENT = "consistent", "inconsistent"
SETS = (CONSISTENT, INCONSISTENT)
# Per-set means reported in Table 1 (the paper's four columns, with the loss split by branch).
STATISTICS = ("p_clean", "p_adv", "ce_clean", "ce_adv", "classification_loss", "alp")


def contribution(*, feature_gradients):
    """Eq. 5: C = mean over examples of |dLoss/dA_fc|, one value per feature of A_fc.

    Args:
      feature_gradients: dLoss/dA_fc per example, [N, F].

    Returns:
      [F] float32 tensor.
    """
    return tf.reduce_mean(tf.abs(tf.cast(feature_gradients, tf.float32)), axis=0)


def grad_cam(*, gradients, activations):
    """Eq. 6: relu(dLoss_c/dA_i * A_i) at a conv layer, summed over its channels.

    The ReLU is applied to each channel's product before the sum, as Eq. 6 writes it
    (element-wise), so negative evidence in one channel cannot cancel another's.

    Args:
      gradients: dLoss_c/dA_i per example, [N, h, w, C].
      activations: A_i, [N, h, w, C].

    Returns:
      [N, h, w] float32 maps, >= 0.
    """
    product = tf.cast(gradients, tf.float32) * tf.cast(activations, tf.float32)
    return tf.reduce_sum(tf.nn.relu(product), axis=-1)


def upsample_maps(*, maps, size):
    """Bilinear resize of [N, h, w] maps to [N, H, W], each scaled to a maximum of 1.

    A map that is zero everywhere stays zero (nothing in it raised the loss).
    """
    maps = tf.image.resize(tf.cast(maps, tf.float32)[..., None], size, method="bilinear")[..., 0]
    peak = tf.reduce_max(maps, axis=[1, 2], keepdims=True)
    return tf.math.divide_no_nan(maps, peak)


def hot_area(*, maps, level=0.5):
    """Share of each map's pixels at or above `level` times its maximum: [N] in [0, 1].

    A one-number summary of "the areas strongly related to the model" (§2.1): a smaller share
    is a more focused map. A zero map has no hot area.
    """
    maps = np.asarray(maps, np.float64)
    peak = maps.reshape(len(maps), -1).max(axis=1)
    hot = (maps >= level * peak[:, None, None]) & (peak[:, None, None] > 0)
    return hot.reshape(len(maps), -1).mean(axis=1)


def per_example_measures(*, clean_logits, adv_logits, labels) -> Dict[str, np.ndarray]:
    """What Table 1, Table 4 and Fig. 11 need, per example, as NumPy arrays [N].

    Keys: p_clean, p_adv (softmax probability of the true class), ce_clean, ce_adv
    (cross-entropy), classification_loss (0.5·(ce_clean + ce_adv), the pairing methods'
    classification term), alp (Eq. 1, ||z_clean - z_adv||²), clean_correct, adv_correct (bool).
    """
    labels = tf.cast(labels, tf.int64)
    ce_clean = losses.cross_entropy(logits=clean_logits, labels=labels)
    ce_adv = losses.cross_entropy(logits=adv_logits, labels=labels)
    measures = {
        "p_clean": losses.true_class_probability(logits=clean_logits, labels=labels),
        "p_adv": losses.true_class_probability(logits=adv_logits, labels=labels),
        "ce_clean": ce_clean,
        "ce_adv": ce_adv,
        "classification_loss": 0.5 * (ce_clean + ce_adv),
        "alp": losses.alp(clean_logits=clean_logits, adv_logits=adv_logits),
        "clean_correct": tf.equal(tf.argmax(clean_logits, -1), labels),
        "adv_correct": tf.equal(tf.argmax(adv_logits, -1), labels),
    }
    return {name: np.asarray(value) for name, value in measures.items()}


def consistency_split(*, clean_correct, adv_correct):
    """§2.2: (consistent, inconsistent) boolean masks [N].

    Consistent: clean and adversarial example both classified correctly. Inconsistent: the
    clean example right, its adversarial example wrong. An example whose clean version is
    already wrong belongs to neither set.
    """
    clean_correct = np.asarray(clean_correct, bool)
    adv_correct = np.asarray(adv_correct, bool)
    return clean_correct & adv_correct, clean_correct & ~adv_correct


def set_statistics(*, measures: Dict[str, np.ndarray]) -> dict:
    """Table 1 and Table 4 from per-example measures (as `per_example_measures` returns).

    Returns:
      {"examples": N, "clean_accuracy", "adv_accuracy", "consistent": {...},
      "inconsistent": {...}} where each set holds
      "count", "share" (of all N examples: Table 4's proportion for the consistent set) and
      the mean of every name in STATISTICS over the set (None for an empty set).
    """
    consistent, inconsistent = consistency_split(clean_correct=measures["clean_correct"],
                                                 adv_correct=measures["adv_correct"])
    total = len(consistent)
    table = {"examples": total,
             "clean_accuracy": float(np.mean(measures["clean_correct"])) if total else None,
             "adv_accuracy": float(np.mean(measures["adv_correct"])) if total else None}
    for name, mask in zip(SETS, (consistent, inconsistent)):
        count = int(mask.sum())
        row = {"count": count, "share": count / total if total else None}
        for stat in STATISTICS:
            row[stat] = float(np.mean(measures[stat][mask])) if count else None
        table[name] = row
    return table


def set_means_over_time(*, records, statistic="alp", fixed_by_last=True):
    """Fig. 4: the mean of `statistic` over each set, per record (epoch or checkpoint).

    Args:
      records: per-epoch dicts with "epoch" and "measures" (per-example lists over one fixed
        probe slice, in the same order every epoch).
      statistic: which per-example measure to average.
      fixed_by_last: split by the last record's model (the paper: sets "according to the
        situation of the model convergence"); False splits each epoch by its own model.

    Returns:
      {"epoch": [...], "consistent": [...], "inconsistent": [...]}, None where a set is empty.
    """
    last = records[-1]["measures"]
    fixed = consistency_split(clean_correct=last["clean_correct"],
                              adv_correct=last["adv_correct"])
    curves = {"epoch": [r["epoch"] for r in records], CONSISTENT: [], INCONSISTENT: []}
    for record in records:
        m = record["measures"]
        masks = fixed if fixed_by_last else consistency_split(
            clean_correct=m["clean_correct"], adv_correct=m["adv_correct"])
        values = np.asarray(m[statistic], np.float64)
        for name, mask in zip(SETS, masks):
            curves[name].append(float(values[mask].mean()) if mask.any() else None)
    return curves
