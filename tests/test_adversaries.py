"""The training adversaries (aalp_tf/adversaries.py) against NumPy references, and in every
method's train step."""
import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from aalp_tf import adversaries
from aalp_tf.data.datasets import DATASETS
from aalp_tf.methods import ADV, METHODS
from aalp_tf.trainer import AdversarialModel, build_model
from tests.helpers.tiny import EPS, linear_logits, mixed_precision, tiny_arrays, tiny_config

SPEC = DATASETS.get("mnist")
SINGLE_STEP = ("fgsm_rs", "n_fgsm")


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    x = rng.random((16, 8, 8, 1)).astype(np.float32)
    x[:4] = 0.0  # corners of [0, 1] exercise the clip
    x[4:8] = 1.0
    noise = rng.uniform(-EPS, EPS, size=x.shape).astype(np.float32)
    return tf.constant(x), tf.constant(rng.integers(0, 5, 16)), tf.constant(noise)


def ce_gradient(x, labels, seed=0):
    """d CE / d x of tests.helpers.tiny.linear_logits, by hand."""
    w = np.random.default_rng(seed).normal(size=(64, 5))
    z = x.reshape(-1, 64) @ w
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return ((p - np.eye(5)[labels]) @ w.T).reshape(x.shape)


def test_fgsm_rs_is_a_projected_step_of_1_25_epsilon_from_the_random_start(batch):
    x, y, noise = batch
    x_adv = adversaries.fgsm_rs(linear_logits(), x, y, epsilon=EPS, noise=noise).numpy()
    xn = x.numpy()
    start = np.clip(np.clip(xn + noise.numpy(), xn - EPS, xn + EPS), 0, 1)
    stepped = start + 1.25 * EPS * np.sign(ce_gradient(start, y.numpy()))
    np.testing.assert_allclose(x_adv, np.clip(np.clip(stepped, xn - EPS, xn + EPS), 0, 1),
                               atol=1e-6)
    assert np.max(np.abs(x_adv - xn)) <= EPS + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_n_fgsm_steps_epsilon_from_twice_the_noise_without_projecting_back(batch):
    x, y, noise = batch
    x_adv = adversaries.n_fgsm(linear_logits(), x, y, epsilon=EPS, noise=noise).numpy()
    xn = x.numpy()
    start = np.clip(xn + 2 * noise.numpy(), 0, 1)
    expected = np.clip(start + EPS * np.sign(ce_gradient(start, y.numpy())), 0, 1)
    np.testing.assert_allclose(x_adv, expected, atol=1e-6)
    reach = np.max(np.abs(x_adv - xn))
    assert EPS + 1e-3 < reach <= 3 * EPS + 1e-6  # outside the epsilon-ball: no projection
    assert x_adv.min() >= 0 and x_adv.max() <= 1


@pytest.mark.parametrize("name", SINGLE_STEP)
def test_single_step_adversaries_raise_the_objective(name, batch):
    x, y, noise = batch
    f = linear_logits()
    objective = adversaries.training_objective("ce", f, x, y)
    start = adversaries.SINGLE_STEP.get(name)(f, x, y, epsilon=EPS, noise=tf.zeros_like(x))
    assert float(tf.reduce_mean(objective(f(start)))) > float(tf.reduce_mean(objective(f(x))))


def test_the_kl_objective_is_zero_at_the_clean_images_and_positive_away(batch):
    x, y, noise = batch
    f = linear_logits()
    kl = adversaries.training_objective("kl", f, x, y)
    np.testing.assert_allclose(kl(f(x)).numpy(), 0.0, atol=1e-6)
    assert float(tf.reduce_min(kl(f(adversaries.fgsm_rs(f, x, y, epsilon=EPS, noise=noise,
                                                        objective=kl))))) > 0.0


def test_every_adversary_is_named_and_an_unknown_one_is_refused():
    assert adversaries.names() == ["fgsm_rs", "n_fgsm", "pgd"]
    with pytest.raises(ValueError) as err:
        AdversarialModel(keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten()]), 3,
                         epsilon=0.1, step_size=0.05, attack_steps=1, adversary="fgsm")
    assert str(err.value) == "adversary must be one of fgsm_rs, n_fgsm, pgd; received: 'fgsm'"


def tiny_model(tmp_path, method, adversary, **train_args):
    keras.utils.set_random_seed(0)
    cfg = tiny_config(tmp_path / "run", method, train_args=train_args)
    cfg = cfg.replace(attack=dataclasses.replace(cfg.attack, adversary=adversary))
    return build_model(cfg, SPEC)


def batch_of(n=32):
    data = tiny_arrays(n, 8)
    return tf.constant(data.x_train / 255.0, tf.float32), tf.constant(data.y_train)


@pytest.mark.parametrize("method", [m for m in METHODS.names() if ADV in METHODS.get(m).branches])
@pytest.mark.parametrize("adversary", SINGLE_STEP)
def test_every_method_trains_with_each_single_step_adversary(tmp_path, method, adversary):
    model = tiny_model(tmp_path, method, adversary)
    x, y = batch_of()
    reach = float(tf.reduce_max(tf.abs(model.branch_inputs(x, y)[ADV] - x)))
    bound = model.attack_config.epsilon * (3 if adversary == "n_fgsm" else 1)
    assert 0.5 * model.attack_config.epsilon < reach <= bound + 1e-6
    before = [v.numpy().copy() for v in model.trainable_variables]
    logs = model.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"]) and "adv_accuracy" in logs
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables))


@pytest.mark.parametrize("adversary", SINGLE_STEP)
def test_a_single_step_adversary_trains_under_mixed_precision(tmp_path, adversary):
    with mixed_precision():
        model = tiny_model(tmp_path, "aalp", adversary)
        x, y = batch_of()
        assert model(x).dtype == tf.float32  # logits in float32 over a float16 backbone
        assert model.backbone(x).dtype == tf.float16
        reach = float(tf.reduce_max(tf.abs(model.branch_inputs(x, y)[ADV] - x)))
        assert 0.5 * model.attack_config.epsilon < reach
        before = [v.numpy().copy() for v in model.trainable_variables]
        logs = model.train_on_batch(x, y, return_dict=True)
        assert np.isfinite(logs["loss"])
        assert any(not np.array_equal(b, v.numpy())
                   for b, v in zip(before, model.trainable_variables))


@pytest.mark.parametrize("method,passes", [("aalp", 1), ("trades", 2)])
def test_a_single_step_adversary_costs_one_input_gradient(tmp_path, method, passes):
    """One inference pass with a gradient (TRADES' KL objective adds the clean prediction)."""
    model = tiny_model(tmp_path, method, "fgsm_rs")
    calls = []
    inner_call = model.backbone.call

    def counting_call(inputs, training=None, mask=None):
        calls.append(bool(training))
        return inner_call(inputs, training=training, mask=mask)

    model.backbone.call = counting_call
    x, y = batch_of()
    model.train_step((x, y))  # eagerly: every call counts, loops included
    assert calls.count(False) == passes
    assert calls.count(True) == 2


def test_the_adversary_is_part_of_the_model_config(tmp_path):
    model = tiny_model(tmp_path, "alp", "n_fgsm", awp_gamma=0.01)
    config = model.get_config()
    assert (config["adversary"], config["awp_gamma"]) == ("n_fgsm", 0.01)
    again = AdversarialModel.from_config(config)
    assert again.attack_config.adversary == "n_fgsm" and again.awp_gamma == 0.01


def test_the_epsilon_warmup_scales_the_single_step_adversary(tmp_path):
    cfg = tiny_config(tmp_path / "run", "madry")
    cfg = cfg.replace(attack=dataclasses.replace(cfg.attack, adversary="fgsm_rs",
                                                 warmup_epochs=1))
    model = build_model(cfg, SPEC, steps_per_epoch=4)
    x, y = batch_of()
    reach = float(tf.reduce_max(tf.abs(model.branch_inputs(x, y)[ADV] - x)))
    assert 0 < reach <= cfg.attack.epsilon / 4 + 1e-6


@pytest.mark.parametrize("method", [m for m in METHODS.names() if ADV in METHODS.get(m).branches])
def test_every_method_trains_with_the_l2_threat_model(tmp_path, method):
    """--norm=l2: the training adversary's examples lie in the L2 ball (and leave the L-inf ball
    of the same radius's per-pixel share), and every method steps on them."""
    keras.utils.set_random_seed(0)
    cfg = tiny_config(tmp_path / "run", method)
    cfg = cfg.replace(attack=dataclasses.replace(cfg.attack, norm="l2", epsilon=1.0,
                                                 step_size=0.5))
    model = build_model(cfg, SPEC)
    assert model.attack_config.norm == "l2" and model.get_config()["norm"] == "l2"
    x, y = batch_of()
    delta = tf.reshape(model.branch_inputs(x, y)[ADV] - x, [x.shape[0], -1])
    lengths = tf.norm(delta, axis=1).numpy()
    assert lengths.max() <= 1.0 + 1e-4 and lengths.min() > 0.25  # in the ball, and moved
    before = [v.numpy().copy() for v in model.trainable_variables]
    logs = model.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"])
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables))


def test_a_single_step_adversary_is_refused_with_the_l2_norm(tmp_path):
    cfg = tiny_config(tmp_path / "run", "alp")
    with pytest.raises(ValueError) as err:
        dataclasses.replace(cfg.attack, norm="l2", epsilon=1.0, adversary="fgsm_rs")
    assert str(err.value) == ("--adversary=fgsm_rs is an L-inf adversary; received: --norm=l2; "
                              "accepted: --adversary=pgd with --norm=l2")
