import numpy as np
import pytest
import tensorflow as tf

from aalp_tf import attacks
from aalp_tf.evaluation import autoattack, fab
from tests.helpers.tiny import linear_logits

NORMS = ["linf", "l2"]
RADIUS = {"linf": 0.1, "l2": 0.6}


@pytest.fixture
def batch():
    x = np.random.default_rng(0).random((16, 8, 8, 1)).astype(np.float32)
    x[:4], x[4:8] = 0.0, 1.0
    x = tf.constant(x)
    return x, tf.argmax(linear_logits()(x), axis=-1)


def _norm(delta, norm):
    flat = delta.reshape(len(delta), -1)
    return np.abs(flat).max(1) if norm == "linf" else np.sqrt((flat ** 2).sum(1))


@pytest.mark.parametrize("norm", NORMS)
def test_outputs_stay_in_the_ball_and_the_box_and_some_are_fooled(norm, batch):
    x, y = batch
    f = linear_logits()
    eps = RADIUS[norm]
    x_adv = autoattack.fab_t(f, x, y, epsilon=eps, steps=20, targets=3, norm=norm).numpy()
    assert x_adv.shape == x.shape
    assert _norm(x_adv - x.numpy(), norm).max() <= eps * (1 + 1e-5)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    fooled = np.argmax(f(x_adv).numpy(), -1) != y.numpy()
    assert 0 < fooled.sum() < len(fooled)  # a radius where FAB-T breaks some, not all


def _two_class_linear(w, b):
    """logits [0, w·x + b]: the boundary is the hyperplane w·x + b = 0."""
    w = tf.constant(w.reshape(-1, 1), tf.float32)
    return lambda x: tf.concat([tf.zeros([tf.shape(x)[0], 1]),
                                tf.matmul(tf.reshape(x, [tf.shape(x)[0], -1]), w) + b], 1)


@pytest.mark.parametrize("norm", NORMS)
def test_finds_the_minimal_perturbation_of_a_linear_model_in_closed_form(norm):
    rng = np.random.default_rng(1)
    w = rng.normal(size=64).astype(np.float32)
    x = (0.5 + 0.02 * rng.uniform(-1, 1, size=(6, 8, 8, 1))).astype(np.float32)
    b = -float(x[0].ravel() @ w) - 0.5  # the class-0 side, close enough that the box is loose
    f = _two_class_linear(w, b)
    margin = -(x.reshape(6, -1) @ w + b)
    assert (margin > 0).all()  # every point is class 0
    dual = np.abs(w).sum() if norm == "linf" else np.sqrt((w ** 2).sum())
    closed_form = margin / dual  # |w·x + b| / ||w||_q, q the dual norm
    labels = tf.zeros([6], tf.int64)
    x_adv, fooled = fab.fab_run(f, x, labels, tf.ones([6], tf.int64), epsilon=10.0,
                                steps=100, norm=norm)
    assert fooled.numpy().all()
    found = _norm(x_adv.numpy() - x, norm)
    np.testing.assert_allclose(found, closed_form, rtol=0.02)
    assert (found >= closed_form * (1 - 1e-4)).all()  # nothing closer than the optimum exists


def test_the_projection_is_the_closed_form_where_the_box_does_not_bind():
    rng = np.random.default_rng(2)
    w = tf.constant(rng.normal(size=(3, 10)), tf.float32)
    points = tf.fill([3, 10], 0.5)
    c = tf.constant([0.1, -0.2, 0.05])
    for norm, threat in attacks.THREAT_MODELS.items():
        d = fab.hyperplane_projection(threat, points, w, c).numpy()
        np.testing.assert_allclose((d * w.numpy()).sum(1), c.numpy(), rtol=1e-5, atol=1e-6)
        if norm == "linf":  # d = c sign(w) / ||w||_1
            expected = c.numpy()[:, None] * np.sign(w.numpy()) / np.abs(w.numpy()).sum(1)[:, None]
        else:  # d = c w / ||w||_2^2
            expected = c.numpy()[:, None] * w.numpy() / (w.numpy() ** 2).sum(1)[:, None]
        np.testing.assert_allclose(d, expected, rtol=1e-4, atol=1e-6)


def test_the_projection_stays_in_the_box_when_it_binds():
    w = tf.constant([[1.0, 1.0, 0.0]])
    points = tf.constant([[0.9, 0.2, 0.5]])
    d = fab.hyperplane_projection(attacks.LinfStep, points, w, tf.constant([0.5])).numpy()
    # 0.1 of room on the first pixel: it takes all of it, the second takes the rest (0.4)
    np.testing.assert_allclose(d, [[0.1, 0.4, 0.0]], atol=1e-6)
    far = fab.hyperplane_projection(attacks.LinfStep, points, w, tf.constant([5.0])).numpy()
    np.testing.assert_allclose(far, [[0.1, 0.8, 0.0]], atol=1e-6)  # unreachable: the corner


@pytest.mark.parametrize("norm", NORMS)
def test_never_counts_as_fooled_a_point_still_classified_correctly(norm):
    """A model that is robust at any radius below 0.25 in L-inf: a crossing outside the ball
    must not count, and the clean image comes back."""
    rng = np.random.default_rng(3)
    w = np.ones(64, np.float32)
    x = (0.2 + 0.05 * rng.random((5, 8, 8, 1))).astype(np.float32)
    f = _two_class_linear(w, -64 * 0.5)  # boundary: mean pixel 0.5, far beyond the ball
    eps = 0.05 if norm == "linf" else 0.4
    x_adv, fooled = fab.fab_run(f, x, tf.zeros([5], tf.int64), tf.ones([5], tf.int64),
                                epsilon=eps, steps=30, norm=norm)
    assert not fooled.numpy().any()
    np.testing.assert_array_equal(x_adv.numpy(), x)
    predicted = np.argmax(f(x_adv).numpy(), -1)
    assert (predicted[fooled.numpy()] != 0).all()


def test_without_restarts_it_draws_no_randomness(batch):
    x, y = batch
    f = linear_logits()
    run = lambda seed: autoattack.fab_t(f, x, y, epsilon=0.1, steps=5, targets=2,
                                        seed=seed).numpy()
    np.testing.assert_array_equal(run((0, 0)), run((5, 9)))
