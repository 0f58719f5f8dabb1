"""Each sanity check fires on a model built to fail it and stays quiet on a sound one."""

import numpy as np
import pytest
import tensorflow as tf

from aalp_tf.errors import UsageError
from aalp_tf.evaluation import checks, robustness

EPS = 0.1
W = tf.constant(np.random.default_rng(0).normal(size=(64, 5)), tf.float32)


def linear(x):
    """A sound model: a fixed random linear classifier on 8x8x1 images (5 classes)."""
    return tf.matmul(tf.reshape(x, [-1, 64]), W)


def with_gradient(scale_fn):
    """linear() whose input gradient is multiplied by scale_fn(x) ([N] per example)."""

    @tf.autograph.experimental.do_not_convert  # autograph would rewrite the custom gradient
    @tf.custom_gradient
    def rescaled(x):
        return tf.identity(x), lambda dy: dy * tf.reshape(scale_fn(x), [-1, 1, 1, 1])

    return lambda x: linear(rescaled(x))


def on_pixel_grid(x):
    """Per example: are all pixels multiples of 1/255, as clean images are?"""
    return tf.reduce_all(tf.abs(x * 255.0 - tf.round(x * 255.0)) < 1e-3, axis=[1, 2, 3])


def stateful(labels, after_calls=12):
    """A model that 'learns the answers' after a number of calls: later attacks see it right."""
    calls = tf.Variable(0)
    memory = 100.0 * tf.one_hot(labels, 5)

    def logits(x):
        calls.assign_add(1)
        return linear(x) + tf.where(calls > after_calls, 1.0, 0.0) * memory

    return logits


def nan_where(rows):
    """linear() with NaN outputs on the examples where rows(x) ([N] bool) holds."""
    return lambda x: tf.where(rows(x)[:, None], float("nan"), linear(x))


def first_example(x):
    return tf.range(tf.shape(x)[0]) == 0


def every_example(x):
    return tf.ones(tf.shape(x)[:1], tf.bool)


BROKEN = {  # check -> a model built to fail it
    checks.finite_outputs: lambda y: nan_where(first_example),
    checks.logits_not_probabilities: lambda y: lambda x: tf.nn.softmax(linear(x)),
    checks.deterministic: lambda y: lambda x: linear(x) + tf.random.normal([tf.shape(x)[0], 5],
                                                                            stddev=10.0),
    checks.nonzero_gradients: lambda y: with_gradient(lambda x: tf.zeros(tf.shape(x)[:1])),
    # the gradient points the wrong way: PGD walks towards the true class
    checks.accuracy_falls_with_epsilon: lambda y: with_gradient(
        lambda x: -tf.ones(tf.shape(x)[:1])),
    # the gradient is right only on the clean images' pixel grid: FGSM works, PGD's random
    # start and steps leave the grid and are misled
    checks.attack_strength_order: lambda y: with_gradient(
        lambda x: tf.where(on_pixel_grid(x), 1.0, -1.0)),
    checks.more_effort_never_helps: stateful,
}


@pytest.fixture
def slice_():
    x = np.random.default_rng(1).integers(0, 256, (16, 8, 8, 1)) / 255.0
    x = tf.constant(x, tf.float32)
    return x, tf.argmax(linear(x), axis=-1)  # the sound model gets every clean image right


@pytest.mark.parametrize("check", list(BROKEN), ids=lambda c: c.__name__)
def test_check_fires_on_a_model_built_to_fail_it_and_not_on_a_sound_one(check, slice_):
    x, y = slice_
    broken = check(checks.Probe(BROKEN[check](y), x, y, epsilon=EPS))
    sound = check(checks.Probe(linear, x, y, epsilon=EPS))
    assert (broken.name, broken.passed) == (check.__name__, False), broken.detail
    assert sound.passed, sound.detail


def test_every_check_is_quiet_on_a_trained_model(trained_tiny_model):
    model, x, y = trained_tiny_model
    results = checks.run_checks(model.inference_logits, x[:32], y[:32], epsilon=0.3)
    assert [r.name for r in results] == [c.__name__ for c in checks.CHECKS]
    assert [r.name for r in results if not r.passed] == [], checks.report_lines(results)


def test_evaluate_prints_a_failed_check_as_a_warning_and_records_it(capsys, monkeypatch, slice_):
    monkeypatch.setattr(checks, "CHECKS", (checks.logits_not_probabilities, checks.deterministic))
    x, y = slice_
    batches = [(x[:6], y[:6]), (x[6:], y[6:])]
    record = robustness.run_checks(BROKEN[checks.logits_not_probabilities](y), batches,
                                   epsilon=EPS, seed=0, examples=10, verbose=True)
    out = capsys.readouterr().out
    assert "sanity checks on the first 10 test images:" in out
    assert "  WARNING logits_not_probabilities: every output row is in [0, 1] and sums to 1" in out
    assert record["examples"] == 10
    assert "logits_not_probabilities" in record["failed"]
    assert record["results"]["deterministic"] == {
        "passed": True, "detail": "two identical calls differ by 0"}


def test_a_model_that_ignores_its_input_is_reported_not_a_crash(slice_):
    x, y = slice_
    constant = lambda images: tf.zeros([tf.shape(images)[0], 5]) + tf.range(5.0)
    result = checks.nonzero_gradients(checks.Probe(constant, x, y, epsilon=EPS))
    assert not result.passed
    assert result.detail.startswith("16 of 16 examples have an all-zero input gradient")


def test_non_finite_outputs_are_named_and_never_pass_for_logits_or_determinism(slice_):
    """A NaN model printed `ok: outputs in [nan, nan]` and blamed randomness at inference."""
    x, y = slice_
    probe = checks.Probe(nan_where(every_example), x, y, epsilon=EPS)
    results = {check.__name__: check(probe) for check in (
        checks.finite_outputs, checks.logits_not_probabilities, checks.deterministic)}
    assert {name: (r.passed, r.detail) for name, r in results.items()} == {
        "finite_outputs": (False, "16 of 16 examples get NaN or inf outputs: non-finite weights "
                                  "(a diverged training run?) or an overflow; their class is "
                                  "argmax's pick among NaNs and their gradient NaN, so "
                                  "accuracies there mean nothing"),
        "logits_not_probabilities": (False, "cannot tell: every output is NaN or inf (see "
                                            "finite_outputs)"),
        "deterministic": (False, "cannot tell: every output is NaN or inf (see finite_outputs)"),
    }


def test_some_non_finite_outputs_leave_the_other_checks_to_the_finite_ones(slice_):
    x, y = slice_
    probe = checks.Probe(nan_where(first_example), x, y, epsilon=EPS)
    finite = checks.finite_outputs(probe)
    assert (finite.passed, finite.detail[:39]) == (False, "1 of 16 examples get NaN or inf outputs")
    logits = linear(x[1:]).numpy()
    assert checks.logits_not_probabilities(probe) == checks.CheckResult(
        "logits_not_probabilities", True, f"outputs in [{logits.min():.3g}, {logits.max():.3g}]"
        f", row sums [{logits.sum(-1).min():.3g}, {logits.sum(-1).max():.3g}]: logits")
    assert checks.deterministic(probe) == checks.CheckResult(
        "deterministic", True, "two identical calls differ by 0")


@pytest.mark.parametrize("run_checks", [True, False])
def test_an_evaluation_of_a_model_whose_every_output_is_nan_fails_in_one_line(slice_,
                                                                              run_checks):
    x, y = slice_
    with pytest.raises(UsageError) as err:
        robustness.evaluate(nan_where(every_example), [(x, y)], attacks=["clean"],
                            image_shape=(8, 8, 1), epsilon=EPS, step_size=EPS / 4,
                            checks=run_checks, check_examples=10)
    assert str(err.value) == (
        "the model's outputs are all NaN or inf, so there is nothing to evaluate; received: a "
        "model whose every logit on the first 10 test images is non-finite (NaN or inf weights, "
        "e.g. from a diverged training run); accepted: a model with finite logits")
