"""Pure per-example losses on logits. Only the trainer reduces them (by the global batch).

Every function is keyword-only, takes logits (never probabilities) and returns a [N] tensor.
"""
import tensorflow as tf


def cross_entropy(*, logits, labels):
    """Softmax cross-entropy per example."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int32), logits=tf.cast(logits, tf.float32))


def alp(*, clean_logits, adv_logits):
    """Eq. 1: ALP loss = ||z_clean - z_adv||_2^2 per example (squared L2 norm, summed over classes)."""
    diff = tf.cast(clean_logits, tf.float32) - tf.cast(adv_logits, tf.float32)
    return tf.reduce_sum(tf.square(diff), axis=-1)


def true_class_probability(*, logits, labels):
    """Softmax probability of the ground-truth class per example."""
    probs = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
    return tf.gather(probs, tf.cast(labels, tf.int32), axis=-1, batch_dims=1)


def adaptive_weight(*, clean_logits, labels):
    """Eq. 9's weight: the clean ground-truth probability, with no gradient through it.

    Low-confidence (typically inconsistent) examples get a small ALP weight; the stop-gradient
    keeps the weight from becoming a second objective that pushes confidence down.
    """
    return tf.stop_gradient(true_class_probability(logits=clean_logits, labels=labels))


def adaptive_alp(*, clean_logits, adv_logits, labels):
    """Eq. 9: Adaptive ALP loss = Probs_clean[y] * ||z_clean - z_adv||^2, per example."""
    weight = adaptive_weight(clean_logits=clean_logits, labels=labels)
    return weight * alp(clean_logits=clean_logits, adv_logits=adv_logits)


def kl_divergence(*, clean_logits, adv_logits):
    """KL(p_clean || p_adv) per example, from logits (TRADES' robust term)."""
    log_p = tf.nn.log_softmax(tf.cast(clean_logits, tf.float32), axis=-1)
    log_q = tf.nn.log_softmax(tf.cast(adv_logits, tf.float32), axis=-1)
    return tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1)


def cw_margin(*, logits, labels):
    """Carlini-Wagner margin: max_{j != y} z_j - z_y per example (> 0 means misclassified).

    Maximised by the CW-k attack; unclipped (no confidence cap), so steps keep pushing past the
    decision boundary.
    """
    logits = tf.cast(logits, tf.float32)
    num_classes = tf.shape(logits)[-1]
    one_hot = tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=logits.dtype)
    true_logit = tf.reduce_sum(one_hot * logits, axis=-1)
    # Push the true class far down so the max runs over the other classes only.
    other_logit = tf.reduce_max(logits - one_hot * 1e9, axis=-1)
    return other_logit - true_logit


def dlr_targeted(*, logits, labels, targets):
    """Targeted DLR loss (Croce & Hein 2020, Eq. 7): -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2).

    pi sorts the logits in decreasing order; > 0 once the target logit passes the true one. The
    denominator makes the loss invariant to shifting and scaling the logits, so a model cannot
    hide behind large logits (where cross-entropy saturates). Needs at least 4 classes.
    """
    logits = tf.cast(logits, tf.float32)
    top = tf.math.top_k(logits, k=4).values
    true_logit = tf.gather(logits, tf.cast(labels, tf.int32), axis=-1, batch_dims=1)
    target_logit = tf.gather(logits, tf.cast(targets, tf.int32), axis=-1, batch_dims=1)
    scale = top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12
    return -(true_logit - target_logit) / scale
