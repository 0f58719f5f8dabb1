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
