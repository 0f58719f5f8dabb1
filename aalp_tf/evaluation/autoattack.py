"""AutoAttack (Croce & Hein 2020) as tf.function graphs: APGD-CE, APGD-T, FAB-T (evaluation.fab),
Square, and `autoattack`, their standard sequence.

Same conventions as `attacks`: pure functions of a logits function (the model in inference mode),
images in [0, 1], true labels and keyword-only settings, stateless seeds (a batch seed [2] or one
per example [N, 2], see `attacks`), fixed step counts (Square stops early only once every example
of the batch is fooled, which changes no result), a threat model `norm` ("linf" or "l2"). Every
output lies in the epsilon-ball around the input and in [0, 1].

An attack is a number of *runs* (random restarts, target classes) of one graph. `run_in_turn`
tries them one after another on the examples that neither the clean input nor an earlier run has
fooled, as AutoAttack does, so per example the first point that fools the model is kept: an
example counts as broken if any iterate of any run fooled it. `autoattack` chains APGD-CE,
APGD-T, FAB-T and Square that way.
"""
import math
from typing import Callable, List, NamedTuple, Sequence

import tensorflow as tf

from aalp_tf import attacks, losses
from aalp_tf.evaluation import fab, square as square_search

RHO = 0.75  # APGD halves its step when fewer than this share of steps raised the objective
MOMENTUM = 0.75  # APGD's alpha
TARGETS = 9  # APGD-T's target classes: the 9 most likely after the top one (all, with 10 classes)
SQUARE_P_INIT = square_search.P_INIT
_STREAM_CE, _STREAM_T, _STREAM_SQUARE = 1, 2, 3  # keep each attack's random numbers apart


class Runs(NamedTuple):
    """`count` runs of one attack: run(index, images, labels, seed) -> (adversarial images, [N]
    bool fooled), index a scalar int32 tensor (restart, target class), seed the batch's [2] or
    the examples' [N, 2]. One graph serves every index."""

    run: Callable
    count: int


_fold = attacks.fold
_per_example = attacks.per_example


def _attack_remaining(run, x, labels, seed, result, found):
    """Runs `run` on the examples not yet fooled; they take its points, fooling or not (so an
    example nothing fools ends at the last run's best point)."""
    remaining = tf.where(~found)[:, 0]

    def attack():
        x_adv, fooled = run(tf.gather(x, remaining), tf.gather(labels, remaining),
                            attacks.gather_seed(seed, remaining))
        return (tf.tensor_scatter_nd_update(result, remaining[:, None], x_adv),
                tf.tensor_scatter_nd_update(found, remaining[:, None], fooled))

    return tf.cond(tf.size(remaining) > 0, attack, lambda: (result, found))


def run_in_turn(logits_fn, x, labels, attacks_in_order: Sequence[Runs], seed=(0, 0)):
    """Tries every run of every attack in turn on the examples that neither the clean input nor
    an earlier run fooled; returns (x_adv, [N] bool fooled)."""
    x = tf.convert_to_tensor(x, tf.float32)
    labels = tf.cast(labels, tf.int64)
    seed = attacks.as_seed(seed)
    result, found = x, attacks.misclassified(logits_fn(x), labels)
    for runs in attacks_in_order:
        def body(index, result, found, run=runs.run):
            attack = lambda images, y, s: run(index, images, y, s)
            return (index + 1, *_attack_remaining(attack, x, labels, seed, result, found))

        _, result, found = tf.while_loop(lambda index, *_, count=runs.count: index < count,
                                         body, (tf.constant(0), result, found))
    return result, found


# ---- APGD ---------------------------------------------------------------------------------


def checkpoints(steps: int) -> List[int]:
    """APGD's checkpoints w_j = ceil(p_j * steps) below `steps`.

    p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06); 100 steps give
    [22, 41, 57, 70, 80, 87, 93, 99].
    """
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1.0:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    # round first: 0.22 + 0.19 is 0.41000000000000003, whose ceil(. * 100) would be 42
    return sorted({k for k in (math.ceil(round(q * steps, 6)) for q in p) if 0 < k < steps})


class _State(NamedTuple):
    x: tf.Tensor  # the iterate x^(k)
    x_prev: tf.Tensor  # x^(k-1), for the momentum term
    grad: tf.Tensor  # gradient of the objective at x
    loss: tf.Tensor  # [N] objective at x
    x_best: tf.Tensor  # x_max, the highest objective so far
    grad_best: tf.Tensor
    loss_best: tf.Tensor  # f_max
    eta: tf.Tensor  # [N] step size
    successes: tf.Tensor  # [N] steps since the last checkpoint that raised the objective
    halved: tf.Tensor  # [N] bool: eta was halved at the last checkpoint
    loss_best_ckpt: tf.Tensor  # [N] f_max at the last checkpoint
    x_adv: tf.Tensor  # the first iterate that fooled the model
    found: tf.Tensor  # [N] bool


def _observe(s: _State, loss, grad, fooled) -> _State:
    """Takes in the objective at s.x: the best point, the successful steps, the first fooling."""
    better = loss > s.loss_best
    first = fooled & ~s.found
    return s._replace(
        grad=grad, loss=loss, loss_best=tf.where(better, loss, s.loss_best),
        x_best=attacks.where_examples(better, s.x, s.x_best),
        grad_best=attacks.where_examples(better, grad, s.grad_best),
        successes=s.successes + tf.cast(loss > s.loss, tf.float32),
        x_adv=attacks.where_examples(first, s.x, s.x_adv), found=s.found | fooled)


def _checkpoint(s: _State, at_checkpoint, interval, rho) -> _State:
    """At a checkpoint, halve eta and restart from x_max where progress stalled."""
    too_few = s.successes < rho * interval  # condition 1
    stalled = ~s.halved & (s.loss_best <= s.loss_best_ckpt)  # condition 2
    halve = at_checkpoint & (too_few | stalled)
    restart = lambda best, now: attacks.where_examples(halve, best, now)
    # The momentum term restarts too (x_prev = x_max): the old direction led away from x_max.
    return s._replace(
        eta=tf.where(halve, s.eta / 2.0, s.eta), x=restart(s.x_best, s.x),
        x_prev=restart(s.x_best, s.x_prev), grad=restart(s.grad_best, s.grad),
        loss=tf.where(halve, s.loss_best, s.loss),
        successes=tf.where(at_checkpoint, tf.zeros_like(s.successes), s.successes),
        halved=tf.where(at_checkpoint, halve, s.halved),
        loss_best_ckpt=tf.where(at_checkpoint, s.loss_best, s.loss_best_ckpt))


def _momentum_step(s: _State, x0, *, threat, epsilon, momentum) -> _State:
    """z = P(x + eta step(grad)); x_next = P(x + alpha (z - x) + (1 - alpha) (x - x_prev))."""
    z = threat.project(threat.step(s.x, s.grad, size=_per_example(s.eta)), x0, epsilon=epsilon)
    x_next = s.x + momentum * (z - s.x) + (1.0 - momentum) * (s.x - s.x_prev)
    return s._replace(x=threat.project(x_next, x0, epsilon=epsilon), x_prev=s.x)


def _apgd_run(logits_fn, x, labels, *, epsilon, steps, objective, seed, norm="linf", rho=RHO,
              momentum=MOMENTUM):
    """One APGD run (Croce & Hein 2020, Algorithm 1) from a uniform random start: `steps`
    gradients. Returns, per example, the first iterate that fooled the model, else x_max."""

    gradient = attacks.loop_input_gradient(logits_fn, objective)

    def measure(point):
        grad, logits = gradient(point)
        return objective(logits), grad, attacks.misclassified(logits, labels)

    threat = attacks.threat_model(norm)
    noise = threat.random_perturb(tf.shape(x), epsilon=epsilon, seed=seed)
    start = threat.project(x + noise, x, epsilon=epsilon)
    loss, grad, fooled = measure(start)
    n = tf.shape(x)[0]
    s = _State(x=start, x_prev=start, grad=grad, loss=loss, x_best=start, grad_best=grad,
               loss_best=loss, eta=tf.fill([n], 2.0 * epsilon), successes=tf.zeros([n]),
               halved=tf.zeros([n], tf.bool), loss_best_ckpt=loss, x_adv=start, found=fooled)
    s = s._replace(x=threat.project(threat.step(start, grad, size=2.0 * epsilon), x,
                                    epsilon=epsilon))
    marks = checkpoints(steps)
    at = tf.constant([k in marks for k in range(steps)])
    since = dict(zip(marks, [b - a for a, b in zip([0] + marks, marks)]))
    interval = tf.constant([float(since.get(k, 0)) for k in range(steps)])

    def body(k, s):
        s = _observe(s, *measure(s.x))
        s = _checkpoint(s, at[k], interval[k], rho)
        return k + 1, _momentum_step(s, x, threat=threat, epsilon=epsilon, momentum=momentum)

    _, s = tf.while_loop(lambda k, s: k < steps, body, (tf.constant(1), s))
    logits = logits_fn(s.x)
    s = _observe(s, objective(logits), s.grad, attacks.misclassified(logits, labels))
    return attacks.where_examples(s.found, s.x_adv, s.x_best), s.found


def apgd_ce_runs(logits_fn, *, epsilon, steps, restarts, norm="linf") -> Runs:
    """APGD on the cross-entropy: one run per restart."""
    run = lambda restart, x, y, seed: _apgd_run(
        logits_fn, x, y, epsilon=epsilon, steps=steps, norm=norm,
        objective=attacks.cross_entropy_objective(y), seed=_fold(seed, _STREAM_CE, restart))
    return Runs(run, restarts)


def apgd_t_runs(logits_fn, *, epsilon, steps, restarts, targets=TARGETS, norm="linf") -> Runs:
    """APGD on the targeted DLR loss: a run per target class and restart.

    Target k (1..targets) is the class ranked k+1 by the clean logits (k = 1: the runner-up);
    targets beyond the number of classes are skipped.
    """

    def run(index, x, y, seed):
        rank = index // restarts + 1
        order = tf.argsort(logits_fn(x), axis=-1, direction="DESCENDING")
        objective = lambda logits: losses.dlr_targeted(logits=logits, labels=y,
                                                       targets=tf.gather(order, rank, axis=1))
        attack = lambda: _apgd_run(logits_fn, x, y, epsilon=epsilon, steps=steps, norm=norm,
                                   objective=objective, seed=_fold(seed, _STREAM_T, index))
        return tf.cond(rank < tf.shape(order)[1], attack,
                       lambda: (x, tf.zeros(tf.shape(y), tf.bool)))

    return Runs(run, targets * restarts)


def square_runs(logits_fn, *, epsilon, queries, restarts, p_init=SQUARE_P_INIT,
                rescale_schedule=True, norm="linf") -> Runs:
    """The Square attack (evaluation.square): one run per restart."""
    run = lambda restart, x, y, seed: square_search.square_run(
        logits_fn, x, y, epsilon=epsilon, queries=queries, p_init=p_init, norm=norm,
        rescale_schedule=rescale_schedule, seed=_fold(seed, _STREAM_SQUARE, restart))
    return Runs(run, restarts)


def fab_t_runs(logits_fn, *, epsilon, steps=fab.STEPS, restarts=1, targets=TARGETS,
               norm="linf") -> Runs:
    """FAB-T (evaluation.fab): a run per target class and restart, as APGD-T's."""
    run = lambda index, x, y, seed: fab.fab_t_run(logits_fn, index, x, y, seed, epsilon=epsilon,
                                                  steps=steps, restarts=restarts, norm=norm)
    return Runs(run, targets * restarts)


# ---- the attacks ----------------------------------------------------------------------------
# Each takes `seed` as a batch seed [2] or one per example [N, 2] (attacks.example_seeds).


@tf.function(autograph=False)  # explicit control flow: autograph would only slow tracing
def apgd_ce(logits_fn, x, labels, *, epsilon, steps=100, restarts=1, seed=(0, 0), norm="linf"):
    """APGD-CE: images within epsilon of x and in [0, 1]; `steps` gradients per restart."""
    runs = apgd_ce_runs(logits_fn, epsilon=epsilon, steps=steps, restarts=restarts, norm=norm)
    return run_in_turn(logits_fn, x, labels, [runs], seed)[0]


@tf.function(autograph=False)  # explicit control flow: autograph would only slow tracing
def apgd_t(logits_fn, x, labels, *, epsilon, steps=100, restarts=1, seed=(0, 0),
           targets=TARGETS, norm="linf"):
    """APGD-T: targeted DLR, `steps` gradients per target class and restart."""
    runs = apgd_t_runs(logits_fn, epsilon=epsilon, steps=steps, restarts=restarts,
                       targets=targets, norm=norm)
    return run_in_turn(logits_fn, x, labels, [runs], seed)[0]


@tf.function(autograph=False)  # explicit control flow: autograph would only slow tracing
def fab_t(logits_fn, x, labels, *, epsilon, steps=fab.STEPS, restarts=1, seed=(0, 0),
          targets=TARGETS, norm="linf"):
    """FAB-T: the closest boundary crossing towards each target class, counted inside the ball."""
    runs = fab_t_runs(logits_fn, epsilon=epsilon, steps=steps, restarts=restarts,
                      targets=targets, norm=norm)
    return run_in_turn(logits_fn, x, labels, [runs], seed)[0]


@tf.function(autograph=False)  # explicit control flow: autograph would only slow tracing
def square(logits_fn, x, labels, *, epsilon, queries=5000, restarts=1, seed=(0, 0),
           p_init=SQUARE_P_INIT, rescale_schedule=True, norm="linf"):
    """Square: gradient-free random search, `queries` forward passes per restart;
    `rescale_schedule`: p's halvings as if the budget were 10000 queries."""
    runs = square_runs(logits_fn, epsilon=epsilon, queries=queries, restarts=restarts,
                       p_init=p_init, rescale_schedule=rescale_schedule, norm=norm)
    return run_in_turn(logits_fn, x, labels, [runs], seed)[0]


@tf.function(autograph=False)  # explicit control flow: autograph would only slow tracing
def autoattack(logits_fn, x, labels, *, epsilon, steps=100, queries=5000, restarts=1,
               seed=(0, 0), targets=TARGETS, fab_steps=fab.STEPS, with_fab=True,
               rescale_schedule=False, norm="linf"):
    """AutoAttack's sequence, each attack on the examples still classified correctly; per
    example the first point that fools wins. The defaults are the standard version exactly:
    APGD-CE and APGD-T (9 targets) of 100 steps, FAB-T (9 targets) of 100 steps, Square of 5000
    queries on p's unrescaled schedule, one restart each. `with_fab=False`, fewer queries and
    `rescale_schedule=True` give the cheaper variant evaluation.suite names apart (aa-lite<k>,
    the earlier `autoattack<k>`)."""
    settings = dict(epsilon=epsilon, restarts=restarts, norm=norm)
    sequence = [apgd_ce_runs(logits_fn, steps=steps, **settings),
                apgd_t_runs(logits_fn, steps=steps, targets=targets, **settings)]
    if with_fab:
        sequence.append(fab_t_runs(logits_fn, steps=fab_steps, targets=targets, **settings))
    sequence.append(square_runs(logits_fn, queries=queries, rescale_schedule=rescale_schedule,
                                **settings))
    return run_in_turn(logits_fn, x, labels, sequence, seed)[0]
