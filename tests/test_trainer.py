import keras
import numpy as np
import pytest
import tensorflow as tf

from aalp_tf.data.datasets import DATASETS
from aalp_tf.trainer import build_model
from tests.helpers.tiny import mixed_precision, tiny_arrays, tiny_config

SPEC = DATASETS.get("mnist")


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def tiny_model(tmp_path, method, **overrides):
    keras.utils.set_random_seed(0)
    return build_model(tiny_config(tmp_path / "run", method, **overrides), SPEC)


def batch(n=32):
    data = tiny_arrays(n, 8)
    return tf.constant(data.x_train / 255.0, tf.float32), tf.constant(data.y_train)


def test_inference_is_untouched_by_guided_dropout(tmp_path):
    model = tiny_model(tmp_path, "aalp")
    x, _ = batch(8)
    features = model.backbone(x, training=False)
    np.testing.assert_allclose(model(x), model.classifier(features), rtol=1e-6, atol=1e-6)


def reference_alp_contribution(model, x, x_adv, y, alpha):
    """NumPy Eq. 7 for ALP's loss: dL/dz by hand, through the dense layer, pooled over branches."""
    w = model.classifier.kernel.numpy()
    b = model.classifier.bias.numpy()
    f_c = model.backbone(x, training=True).numpy()
    f_a = model.backbone(x_adv, training=True).numpy()
    z_c, z_a = f_c @ w + b, f_a @ w + b
    onehot = np.eye(w.shape[1])[y]
    g_c = (0.5 * (softmax(z_c) - onehot) + 2 * alpha * (z_c - z_a)) @ w.T
    g_a = (0.5 * (softmax(z_a) - onehot) - 2 * alpha * (z_c - z_a)) @ w.T
    return np.abs(np.concatenate([g_c * f_c, g_a * f_a])).mean(axis=0)


def test_guided_dropout_mask_and_gradients_match_a_numpy_reference(tmp_path):
    model = tiny_model(tmp_path, "aalp_gd", method_args={"alpha": 0.5})
    x, y = batch(32)
    inputs = model.branch_inputs(x, y)  # the adversary of the step about to run
    r = reference_alp_contribution(model, x, inputs["adv"], y.numpy(), alpha=0.5)
    features = {k: model.backbone(v, training=True) for k, v in inputs.items()}
    np.testing.assert_allclose(model.contribution(features, y).numpy(), r, rtol=1e-4, atol=1e-7)
    keep = r >= np.median(r)
    assert keep.sum() == r.size // 2

    kernel_before = model.classifier.kernel.numpy().copy()
    model.train_step((x, y))
    moved = np.abs(model.classifier.kernel.numpy() - kernel_before).sum(axis=1) > 0
    # Dropped features get no gradient through the last layer; kept ones do.
    np.testing.assert_array_equal(moved, keep)


def test_without_guided_dropout_every_feature_row_moves(tmp_path):
    model = tiny_model(tmp_path, "alp")
    x, y = batch(32)
    inputs = model.branch_inputs(x, y)
    features = np.concatenate([model.backbone(v, training=True).numpy() for v in inputs.values()])
    alive = np.abs(features).sum(axis=0) > 0  # ReLU features that are never on get no gradient
    kernel_before = model.classifier.kernel.numpy().copy()
    model.train_step((x, y))
    moved = np.abs(model.classifier.kernel.numpy() - kernel_before).sum(axis=1) > 0
    np.testing.assert_array_equal(moved, alive)


@pytest.mark.parametrize("method,branches", [("aalp", 2), ("natural", 1), ("madry", 1)])
def test_backbone_runs_once_per_branch_in_a_step(tmp_path, method, branches):
    """Guided Dropout's contribution pass must not run the backbone again."""
    model = tiny_model(tmp_path, method)
    calls = []
    inner_call = model.backbone.call

    def counting_call(inputs, training=None, mask=None):
        calls.append(bool(training))
        return inner_call(inputs, training=training, mask=mask)

    model.backbone.call = counting_call
    x, y = batch(32)
    tf.function(model.train_step)((x, y))
    assert calls.count(True) == branches
    assert calls.count(False) == (1 if branches == 2 or method == "madry" else 0)


def test_mixed_precision_keeps_logits_losses_and_perturbations_in_float32(tmp_path):
    """Under Keras' mixed_float16 policy (what --mixed_precision sets on GPUs; forced here on
    CPU): float16 features, float32 logits, float32 adversarial images, a loss-scaled step."""
    from aalp_tf import attacks, distribution
    assert "no GPU" in distribution.set_precision(True)  # this machine: stays float32
    with mixed_precision():
        model = tiny_model(tmp_path, "aalp")
        x, y = batch(32)
        assert model.backbone(x).dtype == tf.float16
        assert model(x).dtype == tf.float32
        x_adv = attacks.pgd(model, x, y, epsilon=0.3, step_size=0.1, steps=2)
        assert x_adv.dtype == tf.float32
        assert float(tf.reduce_max(tf.abs(x_adv - x))) > 0.05
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        before = [v.numpy().copy() for v in model.trainable_variables]
        logs = model.train_on_batch(x, y, return_dict=True)
        assert np.isfinite(logs["loss"])
        assert all(not np.array_equal(b, v.numpy())
                   for b, v in zip(before, model.trainable_variables))


def test_the_epsilon_warmup_is_counted_in_steps_whoever_calls_fit(tmp_path):
    """The ramp lives in the model (its constructor's steps), not in a caller's attribute: a
    plain `fit` ramps too."""
    cfg = tiny_config(tmp_path / "run", "madry", epochs=2)  # the warm-up fits in the epochs
    cfg = cfg.replace(attack=cfg.attack.__class__(**{**cfg.attack.__dict__, "warmup_epochs": 2}))
    model = build_model(cfg, SPEC, steps_per_epoch=3)
    assert model.epsilon_warmup_steps == 6
    scales = []
    for step in range(8):
        model.optimizer.iterations.assign(step)
        scales.append(float(model.warmup_scale()))
    np.testing.assert_allclose(scales, [1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1, 1, 1], rtol=1e-6)
    x, y = batch(32)
    model.optimizer.iterations.assign(0)
    inputs = model.branch_inputs(x, y)  # the first step's adversary: epsilon / 6
    reach = float(tf.reduce_max(tf.abs(inputs["adv"] - x)))
    assert 0 < reach <= cfg.attack.epsilon / 6 + 1e-6
    assert build_model(cfg, SPEC).epsilon_warmup_steps == 0  # rebuilt for inference: no ramp


def test_the_contribution_pass_takes_float32_gradients_of_float16_features(tmp_path,
                                                                         monkeypatch):
    """Mixed precision hands the pass float16 features; its gradients must be float32, where
    small products do not underflow to ties at the median."""
    from aalp_tf import trainer
    seen = []

    def spy(*, gradients, features):
        seen.append((gradients.dtype, features.dtype))
        return trainer.feature_contribution.__wrapped__(gradients=gradients, features=features)

    spy.__wrapped__ = trainer.feature_contribution
    monkeypatch.setattr(trainer, "feature_contribution", spy)
    model = tiny_model(tmp_path, "aalp")
    x, y = batch(16)
    half = tf.cast(model.backbone(x), tf.float16)
    scores = model.contribution({"clean": half, "adv": half}, y)
    assert seen == [(tf.float32, tf.float32)]
    assert scores.dtype == tf.float32


# ---- AdversarialModel's keyword arguments: the settings' rules, naming the arguments ----------

ARGUMENTS = dict(num_classes=10, epsilon=0.3, step_size=0.1, attack_steps=2)


def flat_backbone():
    images = keras.Input((28, 28, 1))
    return keras.Model(images, keras.layers.Flatten()(images))


@pytest.mark.parametrize("arguments,message", [
    (dict(method="mart2"), "method must be one of aalp, aalp_gd, aalp_sw, alp, madry, natural, "
                           "trades (or one added with aalp_tf.register_method); received: "
                           "'mart2'"),
    (dict(num_classes=1), "num_classes must be an integer >= 2; received: 1"),
    (dict(epsilon=8), "epsilon must be in (0, 1] (pixel units, e.g. 0.3 or 8/255); received: 8"),
    (dict(epsilon=float("nan")), "epsilon must be in (0, 1] (pixel units, e.g. 0.3 or 8/255); "
                                 "received: nan"),
    (dict(step_size=0), "step_size must be in (0, 1]; received: 0"),
    (dict(attack_steps=2.5), "attack_steps must be an integer >= 1; received: 2.5"),
    (dict(attack_steps=2 ** 31), "attack_steps must be at most 2147483647 in size; received: "
                                 "2147483648"),
    (dict(alpha=-1.0), "alpha must be in [0, 1000]; received: -1.0"),
    (dict(trades_beta=float("inf")), "trades_beta must be in [0, 1000]; received: inf"),
    (dict(seed=-1), "seed must be an integer >= 0; received: -1"),
    (dict(val_attack_steps=-2), "val_attack_steps must be an integer >= 0 (0: attack_steps); "
                                "received: -2"),
    (dict(epsilon_warmup_steps=-1), "epsilon_warmup_steps must be an integer >= 0 (0: off); "
                                    "received: -1"),
    (dict(keep_fraction=0), "keep_fraction must be in (0, 1]; received: 0"),
])
def test_bad_arguments_are_refused_in_the_words_of_the_flags(arguments, message):
    """The configs' rules (the flags' ones), each naming the argument: one line, a ValueError."""
    from aalp_tf.trainer import AdversarialModel
    with pytest.raises(ValueError) as err:
        AdversarialModel(flat_backbone(), **{**ARGUMENTS, **arguments})
    assert str(err.value) == message


def test_arguments_at_their_bounds_are_accepted():
    from aalp_tf.trainer import AdversarialModel
    model = AdversarialModel(flat_backbone(), **{**ARGUMENTS, "epsilon": 1, "step_size": 8 / 255,
                             "alpha": 1000, "keep_fraction": 1.0, "seed": 2 ** 31 - 1})
    assert (model.attack_config.epsilon, model.method_config.alpha) == (1.0, 1000.0)
