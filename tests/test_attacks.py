import numpy as np
import pytest
import tensorflow as tf

from aalp_tf import attacks, losses
from tests.helpers.tiny import EPS, linear_logits

@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    x = rng.random((16, 8, 8, 1)).astype(np.float32)
    x[:4] = 0.0  # corners of [0, 1] exercise the clip
    x[4:8] = 1.0
    return tf.constant(x), tf.constant(rng.integers(0, 5, 16))


ATTACKS = {
    "fgsm": lambda f, x, y: attacks.fgsm(f, x, y, epsilon=EPS),
    "pgd": lambda f, x, y: attacks.pgd(f, x, y, epsilon=EPS, step_size=0.03, steps=5),
    "pgd_restarts_best": lambda f, x, y: attacks.pgd(f, x, y, epsilon=EPS, step_size=0.03,
                                                     steps=5, restarts=3, keep_best=True),
    "cw": lambda f, x, y: attacks.cw(f, x, y, epsilon=EPS, step_size=0.03, steps=5),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_outputs_stay_in_the_epsilon_ball_and_in_the_image_range(name, batch):
    x, y = batch
    x_adv = ATTACKS[name](linear_logits(), x, y).numpy()
    assert x_adv.shape == x.shape
    assert np.max(np.abs(x_adv - x.numpy())) <= EPS + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert np.max(np.abs(x_adv - x.numpy())) > EPS / 2  # it moved


def test_attacks_raise_the_loss_they_maximise(batch):
    x, y = batch
    f = linear_logits()
    before = losses.cross_entropy(logits=f(x), labels=y).numpy().mean()
    after = losses.cross_entropy(logits=f(attacks.pgd(f, x, y, epsilon=EPS, step_size=0.03,
                                                      steps=5)), labels=y).numpy().mean()
    assert after > before
    margin_before = losses.cw_margin(logits=f(x), labels=y).numpy().mean()
    margin_after = losses.cw_margin(logits=f(attacks.cw(f, x, y, epsilon=EPS, step_size=0.03,
                                                        steps=5)), labels=y).numpy().mean()
    assert margin_after > margin_before


def test_same_seed_same_output_other_seed_other_start(batch):
    x, y = batch
    f = linear_logits()
    run = lambda seed: attacks.pgd(f, x, y, epsilon=EPS, step_size=0.01, steps=1,
                                   seed=seed).numpy()
    np.testing.assert_array_equal(run((1, 2)), run((1, 2)))
    assert not np.array_equal(run((1, 2)), run((1, 3)))


def test_keep_best_returns_an_iterate_that_fooled_the_model(monkeypatch):
    """A model fooled only near pixel value 0.55; every step moves the pixel up by 0.05."""
    def logits_fn(x):
        near = tf.exp(-tf.reduce_sum(tf.square(x - 0.55), axis=[1, 2, 3]) * 5000.0)
        return tf.stack([1.0 - 2.0 * near, 2.0 * near - 1.0], axis=-1)

    monkeypatch.setattr(attacks, "input_gradient",
                        lambda fn, x, objective: (tf.ones_like(x), fn(x)))
    x, y = tf.fill([2, 1, 1, 1], 0.5), tf.zeros([2], tf.int64)
    settings = dict(epsilon=0.2, step_size=0.05, steps=3, random_start=False)
    last = attacks.pgd.python_function(logits_fn, x, y, **settings)
    best = attacks.pgd.python_function(logits_fn, x, y, keep_best=True, **settings)
    np.testing.assert_allclose(last.numpy(), 0.65, atol=1e-6)  # 0.5 -> 0.55 -> 0.6 -> 0.65
    np.testing.assert_allclose(best.numpy(), 0.55, atol=1e-6)
    assert np.all(np.argmax(logits_fn(best).numpy(), -1) == 1)


def test_pgd_raises_the_loss_over_fgsm_on_a_trained_model(trained_tiny_model):
    model, x, y = trained_tiny_model
    f = model.inference_logits
    loss = lambda images: losses.cross_entropy(logits=f(images), labels=y).numpy().mean()
    fgsm_loss = loss(attacks.fgsm(f, x, y, epsilon=0.3))
    pgd_loss = loss(attacks.pgd(f, x, y, epsilon=0.3, step_size=0.05, steps=20))
    assert pgd_loss > fgsm_loss > loss(x)


@pytest.mark.parametrize("name", ["pgd", "cw"])
def test_repeated_eager_calls_reuse_one_trace(name, batch):
    """Each eager call of the same attack on same-shape batches runs one traced graph (a fresh
    objective closure per call used to retrace CW every call)."""
    x, y = batch
    f = linear_logits()
    before = attacks.pgd.experimental_get_tracing_count()
    for _ in range(3):
        ATTACKS[name](f, x, y)
    assert attacks.pgd.experimental_get_tracing_count() - before == 1


def test_the_pgd_loop_calls_the_gradient_as_a_function_of_its_own(batch):
    """Inlined into the while loop's body, TF's oneDNN pass left MaxPoolGrad on its slow kernel
    in some processes; as a function of its own it never did (attacks.loop_input_gradient)."""
    x, y = batch
    graph_def = attacks.pgd.get_concrete_function(
        linear_logits(), x, y, epsilon=EPS, step_size=0.03, steps=5).graph.as_graph_def()
    library = {f.signature.name: f for f in graph_def.library.function}
    loops = [n for n in graph_def.node if n.op in ("While", "StatelessWhile")]
    assert len(loops) == 1
    body = library[loops[0].attr["body"].func.name]
    called = [library[n.attr["f"].func.name] for n in body.node_def
              if n.op in ("PartitionedCall", "StatefulPartitionedCall")]
    assert [f.attr["_noinline"].b for f in called] == [True]
    assert any(n.op == "Sign" for n in body.node_def)  # the step itself stays in the loop


L2_EPS = 0.5


@pytest.mark.parametrize("name", ["fgsm", "pgd", "cw"])
def test_l2_outputs_stay_in_the_l2_ball_and_in_the_image_range(name, batch):
    x, y = batch
    run = {"fgsm": lambda: attacks.fgsm(linear_logits(), x, y, epsilon=L2_EPS, norm="l2"),
           "pgd": lambda: attacks.pgd(linear_logits(), x, y, epsilon=L2_EPS, step_size=0.2,
                                      steps=5, norm="l2"),
           "cw": lambda: attacks.cw(linear_logits(), x, y, epsilon=L2_EPS, step_size=0.2,
                                    steps=5, norm="l2")}[name]
    delta = run().numpy() - x.numpy()
    norms = np.sqrt((delta.reshape(16, -1) ** 2).sum(1))
    assert norms.max() <= L2_EPS + 1e-5
    assert (x.numpy() + delta).min() >= 0.0 and (x.numpy() + delta).max() <= 1.0
    assert norms[8:].min() > L2_EPS / 2  # the inner images moved a good part of the radius
    assert np.abs(delta).max() < L2_EPS  # not an L-inf step: no pixel moved by epsilon


def test_each_threat_model_projects_onto_its_ball_and_steps_along_its_steepest_direction():
    x = tf.fill([2, 2, 2, 1], 0.5)
    far = x + tf.constant([0.4, -0.3, 0.0, 0.0, 0.1, 0.1, 0.1, 0.1], shape=[2, 2, 2, 1])
    linf = attacks.LinfStep.project(far, x, epsilon=0.2).numpy() - 0.5
    np.testing.assert_allclose(linf.ravel(), [0.2, -0.2, 0, 0, 0.1, 0.1, 0.1, 0.1], atol=1e-6)
    l2 = attacks.L2Step.project(far, x, epsilon=0.1).numpy() - 0.5
    np.testing.assert_allclose(l2.ravel(), [0.08, -0.06, 0, 0, 0.05, 0.05, 0.05, 0.05],
                               atol=1e-6)  # scaled down to norm 0.1, direction kept
    grad = tf.constant([3.0, -4.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0], shape=[2, 2, 2, 1])
    np.testing.assert_allclose(attacks.L2Step.step(x, grad, size=1.0).numpy().ravel() - 0.5,
                               [0.6, -0.8, 0, 0, 0.5, 0.5, 0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(attacks.LinfStep.step(x, grad, size=0.1).numpy().ravel() - 0.5,
                               [0.1, -0.1, 0, 0, 0.1, 0.1, 0.1, 0.1], atol=1e-6)
    start = attacks.L2Step.random_perturb([3, 4, 4, 1], epsilon=0.7, seed=(1, 2)).numpy()
    np.testing.assert_allclose(np.sqrt((start.reshape(3, -1) ** 2).sum(1)), 0.7, rtol=1e-5)
    with pytest.raises(ValueError, match=r"Expected one of \['l2', 'linf'\]. Received: "
                                         r"norm='l1'"):
        attacks.threat_model("l1")


def test_per_example_random_numbers_depend_only_on_each_examples_seed():
    seeds = attacks.example_seeds(5, tf.constant([0, 1, 2, 3], tf.int64))
    draw = lambda s: attacks.random_uniform([int(s.shape[0]), 50], s).numpy()
    everyone = draw(seeds)
    np.testing.assert_array_equal(draw(tf.gather(seeds, [2, 0])), everyone[[2, 0]])
    assert everyone.min() >= 0.0 and everyone.max() < 1.0
    assert abs(everyone.mean() - 0.5) < 0.05 and len(np.unique(everyone)) == everyone.size
    assert not np.array_equal(draw(attacks.fold(seeds, 1)), everyone)
    assert not np.array_equal(draw(attacks.example_seeds(6, tf.range(4, dtype=tf.int64))),
                              everyone)
    ints = attacks.random_uniform([4, 1000], seeds, minval=2, maxval=7, dtype=tf.int32).numpy()
    assert set(np.unique(ints)) == {2, 3, 4, 5, 6}
    normal = attacks.random_normal([4, 2000], seeds).numpy()
    assert abs(normal.mean()) < 0.05 and abs(normal.std() - 1.0) < 0.05
