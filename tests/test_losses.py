import numpy as np
import pytest
import tensorflow as tf

from aalp_tf import losses

LOGITS = np.array([[2.0, 1.0, 0.0], [0.5, 0.5, 3.0]], np.float32)
ADV = np.array([[0.0, 2.0, 1.0], [1.0, 0.0, 2.0]], np.float32)
LABELS = np.array([0, 2])


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_cross_entropy_by_hand():
    expected = -np.log(softmax(LOGITS)[[0, 1], LABELS])
    np.testing.assert_allclose(losses.cross_entropy(logits=LOGITS, labels=LABELS), expected,
                               rtol=1e-6)


def test_alp_is_squared_l2_of_logit_difference_eq1():
    # Row 0: (2-0)^2 + (1-2)^2 + (0-1)^2 = 6; row 1: 0.25 + 0.25 + 1 = 1.5
    np.testing.assert_allclose(losses.alp(clean_logits=LOGITS, adv_logits=ADV), [6.0, 1.5])


def test_adaptive_weight_is_the_clean_true_class_probability_eq9():
    expected = softmax(LOGITS)[[0, 1], LABELS]
    np.testing.assert_allclose(losses.adaptive_weight(clean_logits=LOGITS, labels=LABELS),
                               expected, rtol=1e-6)
    np.testing.assert_allclose(losses.adaptive_alp(clean_logits=LOGITS, adv_logits=ADV,
                                                   labels=LABELS),
                               expected * np.array([6.0, 1.5]), rtol=1e-6)


def test_adaptive_weight_carries_no_gradient():
    clean = tf.Variable(LOGITS)
    with tf.GradientTape(persistent=True) as tape:
        weight = tf.reduce_sum(losses.adaptive_weight(clean_logits=clean, labels=LABELS))
        weighted = tf.reduce_sum(losses.adaptive_alp(clean_logits=clean, adv_logits=ADV,
                                                     labels=LABELS))
        plain = tf.reduce_sum(losses.alp(clean_logits=clean, adv_logits=ADV))
    assert tape.gradient(weight, clean) is None
    # d(w * alp)/d clean = w * d alp/d clean exactly: the weight is a constant.
    w = softmax(LOGITS)[[0, 1], LABELS][:, None]
    np.testing.assert_allclose(tape.gradient(weighted, clean), w * 2 * (LOGITS - ADV), rtol=1e-5)
    np.testing.assert_allclose(tape.gradient(plain, clean), 2 * (LOGITS - ADV), rtol=1e-6)


def test_kl_divergence_by_hand():
    p, q = softmax(LOGITS), softmax(ADV)
    expected = (p * (np.log(p) - np.log(q))).sum(axis=-1)
    np.testing.assert_allclose(losses.kl_divergence(clean_logits=LOGITS, adv_logits=ADV),
                               expected, rtol=1e-5)
    assert np.allclose(losses.kl_divergence(clean_logits=LOGITS, adv_logits=LOGITS), 0.0,
                       atol=1e-6)


@pytest.mark.parametrize("labels,expected", [([0, 2], [1.0 - 2.0, 0.5 - 3.0]),
                                             ([1, 0], [2.0 - 1.0, 3.0 - 0.5])])
def test_cw_margin_by_hand(labels, expected):
    np.testing.assert_allclose(losses.cw_margin(logits=LOGITS, labels=labels), expected)
