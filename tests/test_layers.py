import math

import numpy as np
import pytest
import tensorflow as tf

from aalp_tf.layers import GuidedDropout, feature_contribution


def reference_mask(r, keep_fraction):
    """NumPy reference of Eq. 8: keep features with R >= the k-th largest R (median at 0.5)."""
    k = max(1, math.ceil(keep_fraction * r.size))
    threshold = np.sort(r)[::-1][k - 1]
    return (r >= threshold).astype(np.float32)


@pytest.mark.parametrize("num_features", [2, 7, 8, 64])
def test_default_keeps_exactly_features_at_or_above_the_median(num_features):
    r = np.random.default_rng(num_features).random(num_features).astype(np.float32)
    mask = GuidedDropout().keep_mask(r).numpy()
    np.testing.assert_array_equal(mask, (r >= np.median(r)).astype(np.float32))
    assert mask.sum() == math.ceil(num_features / 2)


@pytest.mark.parametrize("keep_fraction", [0.1, 0.25, 0.5, 0.9, 1.0])
def test_keep_fraction_matches_reference(keep_fraction):
    r = np.random.default_rng(3).random(40).astype(np.float32)
    mask = GuidedDropout(keep_fraction).keep_mask(r).numpy()
    np.testing.assert_array_equal(mask, reference_mask(r, keep_fraction))
    assert mask.sum() == math.ceil(keep_fraction * 40)


def test_ties_at_the_threshold_are_all_kept():
    r = np.array([0.0, 1.0, 1.0, 1.0], np.float32)
    np.testing.assert_array_equal(GuidedDropout().keep_mask(r).numpy(), [0, 1, 1, 1])


def test_training_call_masks_and_optionally_rescales():
    x = np.arange(1, 9, dtype=np.float32).reshape(2, 4)
    r = np.array([4.0, 1.0, 3.0, 2.0], np.float32)
    out = GuidedDropout()(x, training=True, contribution=r).numpy()
    np.testing.assert_array_equal(out, x * np.array([1, 0, 1, 0], np.float32))
    scaled = GuidedDropout(rescale=True)(x, training=True, contribution=r).numpy()
    np.testing.assert_allclose(scaled, x * np.array([2, 0, 2, 0], np.float32))


def test_identity_at_inference_and_without_contribution():
    x = np.random.default_rng(0).random((3, 6)).astype(np.float32)
    r = np.arange(6, dtype=np.float32)
    layer = GuidedDropout()
    np.testing.assert_array_equal(layer(x, training=False, contribution=r).numpy(), x)
    np.testing.assert_array_equal(layer(x).numpy(), x)
    np.testing.assert_array_equal(layer(x, training=True).numpy(), x)


def test_feature_contribution_is_eq7():
    rng = np.random.default_rng(1)
    g, a = rng.normal(size=(5, 6)), rng.normal(size=(5, 6))
    np.testing.assert_allclose(feature_contribution(gradients=g, features=a).numpy(),
                               np.abs(g * a).mean(axis=0), rtol=1e-6)


@pytest.mark.parametrize("bad,shown", [(0.0, "0.0"), (-0.1, "-0.1"), (1.5, "1.5"),
                                        (float("nan"), "nan"), ("0.5", "'0.5'")])
def test_bad_keep_fraction_is_refused_with_the_exact_message(bad, shown):
    """--keep_fraction's rule, in its words, naming the argument."""
    with pytest.raises(ValueError) as err:
        GuidedDropout(bad)
    assert str(err.value) == f"keep_fraction must be in (0, 1]; received: {shown}"


def test_config_round_trip():
    layer = GuidedDropout(0.3, rescale=True, name="gd")
    clone = GuidedDropout.from_config(layer.get_config())
    assert (clone.keep_fraction, clone.rescale, clone.name) == (0.3, True, "gd")


def test_mask_carries_no_gradient():
    r = tf.Variable([1.0, 2.0, 3.0, 4.0])
    with tf.GradientTape() as tape:
        out = tf.reduce_sum(GuidedDropout()(tf.ones((2, 4)), training=True, contribution=r))
    assert tape.gradient(out, r) is None
