import numpy as np
import pytest
import tensorflow as tf

from aalp_tf import attacks, losses
from aalp_tf.evaluation import autoattack, suite
from aalp_tf.errors import UsageError
from tests.helpers.tiny import EPS, linear_logits


@pytest.fixture
def batch():
    """16 images of 8x8x1, 8 of them at the corners of [0, 1], each classified right."""
    x = np.random.default_rng(0).random((16, 8, 8, 1)).astype(np.float32)
    x[:4], x[4:8] = 0.0, 1.0
    x = tf.constant(x)
    return x, tf.argmax(linear_logits()(x), axis=-1)


def accuracy(logits_fn, x, y):
    return float(np.mean(np.argmax(logits_fn(x).numpy(), -1) == np.asarray(y)))


ATTACKS = {
    "apgd_ce": lambda f, x, y: autoattack.apgd_ce(f, x, y, epsilon=EPS, steps=10, restarts=2),
    "apgd_t": lambda f, x, y: autoattack.apgd_t(f, x, y, epsilon=EPS, steps=5, targets=2),
    "square": lambda f, x, y: autoattack.square(f, x, y, epsilon=EPS, queries=50),
    "autoattack": lambda f, x, y: autoattack.autoattack(f, x, y, epsilon=EPS, steps=5,
                                                        queries=20, targets=2, fab_steps=5),
    "apgd_ce_l2": lambda f, x, y: autoattack.apgd_ce(f, x, y, epsilon=L2_EPS, steps=10,
                                                     norm="l2"),
    "apgd_t_l2": lambda f, x, y: autoattack.apgd_t(f, x, y, epsilon=L2_EPS, steps=5, targets=2,
                                                   norm="l2"),
    "square_l2": lambda f, x, y: autoattack.square(f, x, y, epsilon=L2_EPS, queries=50,
                                                   norm="l2"),
    "autoattack_l2": lambda f, x, y: autoattack.autoattack(f, x, y, epsilon=L2_EPS, steps=5,
                                                           queries=20, targets=2, fab_steps=5,
                                                           norm="l2"),
}
L2_EPS = 0.5
NORM_OF = {name: "l2" for name in ATTACKS if name.endswith("_l2")}


def distance(delta, norm):
    flat = delta.reshape(len(delta), -1)
    return np.abs(flat).max(1) if norm == "linf" else np.sqrt((flat ** 2).sum(1))


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_outputs_stay_in_the_epsilon_ball_and_in_the_image_range(name, batch):
    x, y = batch
    f = linear_logits()
    x_adv = ATTACKS[name](f, x, y).numpy()
    norm = NORM_OF.get(name, "linf")
    assert x_adv.shape == x.shape
    assert distance(x_adv - x.numpy(), norm).max() <= (L2_EPS if norm == "l2" else EPS) + 1e-5
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert np.all(np.max(np.abs(x_adv - x.numpy()), axis=(1, 2, 3)) > 0)  # every example moved
    assert accuracy(f, x_adv, y) < 1.0


def test_checkpoints_follow_the_paper():
    assert autoattack.checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert autoattack.checkpoints(10) == [3, 5, 6, 7, 8, 9]


def test_targeted_dlr_loss_matches_a_hand_computation():
    logits = tf.constant([[1.0, 4.0, 2.0, 0.0, 3.0], [5.0, 1.0, 0.0, 2.0, -1.0]])
    labels, targets = tf.constant([1, 1]), tf.constant([4, 0])
    # row 0: sorted 4, 3, 2, 1, 0 -> -(4 - 3) / (4 - (2 + 1) / 2) = -1 / 2.5
    # row 1: sorted 5, 2, 1, 0, -1 -> -(1 - 5) / (5 - (1 + 0) / 2) = 4 / 4.5
    expected = [-0.4, 4.0 / 4.5]
    got = losses.dlr_targeted(logits=logits, labels=labels, targets=targets).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    shifted = losses.dlr_targeted(logits=3.0 * logits - 7.0, labels=labels, targets=targets)
    np.testing.assert_allclose(shifted.numpy(), expected, rtol=1e-5)  # shift and scale invariant


def _state(**values):
    n = 3
    base = dict(x=tf.zeros([n, 1, 1, 1]), x_prev=tf.zeros([n, 1, 1, 1]),
                grad=tf.zeros([n, 1, 1, 1]), loss=tf.zeros([n]), x_best=tf.ones([n, 1, 1, 1]),
                grad_best=tf.ones([n, 1, 1, 1]), loss_best=tf.fill([n], 5.0),
                eta=tf.fill([n], 0.4), successes=tf.zeros([n]), halved=tf.zeros([n], tf.bool),
                loss_best_ckpt=tf.zeros([n]), x_adv=tf.zeros([n, 1, 1, 1]),
                found=tf.zeros([n], tf.bool))
    base.update({k: tf.constant(v) for k, v in values.items()})
    return autoattack._State(**base)


def test_a_checkpoint_halves_the_step_and_restarts_from_the_best_point_where_progress_stalled():
    # example 0: 10 of 22 steps raised the loss (< 0.75 * 22): condition 1
    # example 1: 20 of 22, the best loss rose since the last checkpoint: keeps its step
    # example 2: 20 of 22, the best loss did not rise and the step was not halved: condition 2
    s = _state(successes=[10.0, 20.0, 20.0], loss_best_ckpt=[0.0, 0.0, 5.0])
    after = autoattack._checkpoint(s, tf.constant(True), 22.0, autoattack.RHO)
    np.testing.assert_allclose(after.eta.numpy(), [0.2, 0.4, 0.2])
    np.testing.assert_array_equal(after.x.numpy().ravel(), [1.0, 0.0, 1.0])  # x_best
    np.testing.assert_array_equal(after.x_prev.numpy().ravel(), [1.0, 0.0, 1.0])
    np.testing.assert_array_equal(after.halved.numpy(), [True, False, True])
    np.testing.assert_array_equal(after.successes.numpy(), [0.0, 0.0, 0.0])
    between = autoattack._checkpoint(s, tf.constant(False), 0.0, autoattack.RHO)
    np.testing.assert_allclose(between.eta.numpy(), [0.4, 0.4, 0.4])
    np.testing.assert_array_equal(between.successes.numpy(), [10.0, 20.0, 20.0])


def test_run_in_turn_tries_later_runs_only_on_the_examples_still_correct(batch):
    x, y = batch
    seen = []

    def fool_first_half(index, images, labels, seed):  # marks its points with +0.25
        seen.append(int(tf.shape(images)[0]))
        return images + 0.25, tf.range(tf.shape(images)[0]) < 8

    def fool_all(index, images, labels, seed):
        seen.append(int(tf.shape(images)[0]))
        return images + 0.5, tf.ones(tf.shape(labels), tf.bool)

    result, found = autoattack.run_in_turn(
        linear_logits(), x, y, [autoattack.Runs(fool_first_half, 1),
                                autoattack.Runs(fool_all, 1)])
    assert seen == [16, 8]
    np.testing.assert_allclose(result.numpy()[:8], x.numpy()[:8] + 0.25)
    np.testing.assert_allclose(result.numpy()[8:], x.numpy()[8:] + 0.5)
    assert found.numpy().all()


def test_apgd_ce_beats_or_matches_pgd_of_the_same_budget(trained_tiny_model):
    model, x, y = trained_tiny_model
    f = model.inference_logits
    eps, steps = 0.2, 20  # where PGD-20 leaves about a fifth of this model's accuracy
    apgd = accuracy(f, autoattack.apgd_ce(f, x, y, epsilon=eps, steps=steps), y)
    for step_size in (eps / 10, eps / 4, eps / 2):  # tensors: one trace for every step size
        pgd = accuracy(f, attacks.pgd(f, x, y, epsilon=tf.constant(eps),
                                      step_size=tf.constant(step_size), steps=steps,
                                      keep_best=True), y)
        assert apgd <= pgd, (step_size, apgd, pgd)
    assert apgd < accuracy(f, x, y)


def _no_gradient(logits_fn):
    """logits_fn whose gradient raises: an attack that asks for one fails."""

    @tf.autograph.experimental.do_not_convert  # autograph would rewrite the custom gradient
    @tf.custom_gradient
    def guarded(x):
        def grad(_, variables=None):
            raise AssertionError("the attack asked for a gradient")

        return logits_fn(x), grad

    return guarded


def test_square_fools_an_undefended_model_without_any_gradient(trained_tiny_model):
    model, x, y = trained_tiny_model
    f = _no_gradient(model.inference_logits)
    with pytest.raises(AssertionError, match="asked for a gradient"):
        attacks.fgsm(f, x, y, epsilon=0.3)  # the guard works
    x_adv = autoattack.square(f, x, y, epsilon=0.3, queries=100)
    assert accuracy(f, x, y) > 0.9
    assert accuracy(f, x_adv, y) < 0.5


@pytest.mark.parametrize("name,family,steps", [
    ("apgd-ce", "apgd-ce", 100), ("apgd-ce50", "apgd-ce", 50), ("APGD-T", "apgd-t", 100),
    ("apgd-t20", "apgd-t", 20), ("square", "square", 5000), ("square1000", "square", 1000),
    ("autoattack", "autoattack", 0), ("aa-lite", "aa-lite", 1000),
    ("aa-lite2000", "aa-lite", 2000), ("autoattack1000", "aa-lite", 1000),
    ("fab-t", "fab-t", 100), ("fab-t20", "fab-t", 20),
    ("pgd40", "pgd", 40), ("fgsm", "fgsm", 0),
])
def test_attack_names_carry_a_count_or_take_the_family_default(name, family, steps):
    spec = suite.parse_attack(name)
    assert (spec.name, spec.family, spec.steps) == (name.lower(), family, steps)


@pytest.mark.parametrize("name", ["pgd", "apgd-ce0", "fgsm3", "square-1", "apgd",
                                  "autoattack5000", "autoattack500"])
def test_bad_attack_names_are_refused_in_one_line(name):
    with pytest.raises(UsageError) as err:
        suite.parse_attack(name)
    assert str(err.value) == (
        f"unknown attack: received {name!r}; accepted: aa-lite[<k>], apgd-ce[<k>], "
        "apgd-t[<k>], autoattack, clean, cw<k>, fab-t[<k>], fgsm, pgd<k>, square[<k>] (k = "
        "steps, e.g. pgd40; Square's queries for square and aa-lite; autoattack is the "
        "standard version and takes no count)")


@pytest.mark.parametrize("name,function,settings", [
    ("apgd-ce50", "apgd_ce", {"steps": 50}),
    ("apgd-t", "apgd_t", {"steps": 100}),
    ("fab-t", "fab_t", {"steps": 100}),
    ("square1000", "square", {"queries": 1000}),
    ("autoattack", "autoattack", {"steps": 100, "fab_steps": 100, "queries": 5000}),
    ("aa-lite", "autoattack", {"steps": 100, "queries": 1000, "with_fab": False,
                               "rescale_schedule": True}),
    ("autoattack1000", "autoattack", {"steps": 100, "queries": 1000, "with_fab": False,
                                      "rescale_schedule": True}),
])
def test_each_family_calls_its_attack_with_the_evaluation_settings(monkeypatch, name, function,
                                                                   settings):
    calls = []
    monkeypatch.setattr(autoattack, function,
                        lambda f, x, y, **kwargs: calls.append(kwargs) or x + 0.0)
    spec = suite.parse_attack(name)
    build = suite.ATTACK_FAMILIES.get(spec.family)
    x = tf.zeros([2, 8, 8, 1])
    seeds = attacks.example_seeds(7, tf.constant([3, 4]))
    build(linear_logits(), steps=spec.steps, epsilon=0.3, step_size=0.01, restarts=2,
          norm="l2")(x, tf.zeros([2], tf.int64), seeds)
    [call] = calls
    assert call.pop("seed") is seeds
    assert call == dict(epsilon=0.3, restarts=2, norm="l2", **settings)


@pytest.mark.parametrize("name,words", [
    ("autoattack", "standard AutoAttack: APGD-CE, APGD-T (9 targets), FAB-T (9 targets), "
                   "Square (5000 queries), 1 restart each"),
    ("autoattack1000", "NOT standard AutoAttack: APGD-CE, APGD-T (9 targets), no FAB-T, "
                       "Square (1000 queries), 1 restart each"),
])
def test_the_report_says_which_autoattack_ran(name, words):
    assert suite.describe(suite.parse_attack(name)) == words


EVAL_ATTACKS = ["pgd5", "apgd-ce10", "apgd-t5", "fab-t5", "square30"]


@pytest.mark.parametrize("name", EVAL_ATTACKS)
def test_an_example_gets_the_same_result_whatever_its_batch_and_neighbours(name):
    """Per-example seeds: the same 7 images, in batches of 3 and of 7, and shuffled among other
    images, give the same adversarial images, not just the same accuracy."""
    rng = np.random.default_rng(4)
    x = tf.constant(rng.random((12, 8, 8, 1)).astype(np.float32))
    f = linear_logits()
    y = tf.argmax(f(x), axis=-1)
    fn = suite.attack_function(suite.parse_attack(name), f, image_shape=(8, 8, 1), epsilon=EPS,
                               step_size=0.03, seed=3)
    index = tf.range(12, dtype=tf.int64)
    whole = fn(x[:7], y[:7], index[:7]).numpy()
    in_threes = np.concatenate([fn(x[i:j], y[i:j], index[i:j]).numpy()
                                for i, j in ((0, 3), (3, 6), (6, 7))])
    # Not bit for bit: the model's own matmul rounds differently for a batch of 1 (FAB-T's
    # steps keep those last bits, the sign steps do not); random numbers differing would move
    # pixels by up to epsilon.
    same = lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    same(in_threes, whole)
    order = rng.permutation(12)  # the 7 among 5 others, in another order
    shuffled = fn(tf.gather(x, order), tf.gather(y, order), tf.gather(index, order)).numpy()
    same(shuffled[np.argsort(order)][:7], whole)
    assert not np.array_equal(whole, x.numpy()[:7])  # it attacked


def test_the_evaluation_figure_does_not_depend_on_the_batch_size():
    rng = np.random.default_rng(5)
    x = rng.random((10, 8, 8, 1)).astype(np.float32)
    f = linear_logits()
    y = np.argmax(f(x).numpy(), -1)
    figures = []
    for size in (3, 7, 10):
        batches = [(x[i:i + size], y[i:i + size]) for i in range(0, 10, size)]
        accuracy, _ = suite.evaluate(f, batches, ["pgd3", "square20"], image_shape=(8, 8, 1),
                                     epsilon=0.05, step_size=0.02, verbose=0)
        figures.append(accuracy)
    assert figures[0] == figures[1] == figures[2]
    assert 0.0 < figures[0]["pgd3"] < 1.0  # a radius where the figure can move


@pytest.mark.parametrize("attacks", [
    pytest.param(["clean", "pgd3"], id="pgd"),
    # Slow: the L2 AutoAttack graph (APGD-CE, APGD-T, Square) takes ~30 CPU-seconds to trace and
    # run even on 6 tiny images. Its attacks in L2 are checked one by one above
    # (test_outputs_stay_in_the_epsilon_ball...[autoattack_l2] and the rest), its name's meaning
    # in test_the_report_says_which_autoattack_ran.
    pytest.param(["clean", "pgd3", "autoattack1000"], marks=pytest.mark.slow, id="autoattack"),
])
def test_an_l2_evaluation_runs_every_attack_and_the_checks_in_l2_and_says_so(monkeypatch,
                                                                              attacks):
    from aalp_tf.evaluation import checks, robustness
    seen = []
    real = checks.run_checks
    monkeypatch.setattr(checks, "run_checks",
                        lambda *a, **kw: seen.append(kw["norm"]) or real(*a, **kw))
    x = np.random.default_rng(6).random((6, 8, 8, 1)).astype(np.float32)
    f = linear_logits()
    y = np.argmax(f(x).numpy(), -1)
    record = robustness.evaluate(f, [(x, y)], attacks=attacks,
                                 image_shape=(8, 8, 1), epsilon=0.5, step_size=0.2, norm="l2",
                                 check_examples=6)
    assert seen == ["l2"] and record["norm"] == "l2"
    assert record["accuracy"]["pgd3"] < 1.0
    assert list(record["accuracy"]) == attacks
    if "autoattack1000" in attacks:
        assert record["attacks_run"]["autoattack1000"].startswith("NOT standard AutoAttack")
