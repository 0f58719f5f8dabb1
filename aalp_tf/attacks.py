"""Attacks as tf.function graphs over a logits function: FGSM, PGD-k, CW-k; the threat models
(L-inf, L2) and the stateless randomness every attack draws from.

Pure: each takes `logits_fn(images) -> logits` (which must run the model in inference mode),
images in [0, 1], true labels and keyword-only settings; it never touches optimizers, flags,
files or the model's training mode. Every output lies in the epsilon-ball of its norm around the
input and in [0, 1].

An `objective(logits) -> [N]` is the per-example value the attack maximises; by default the
cross-entropy with the true labels.

A `seed` is either one stateless seed [2] for the whole batch (the trainer's: a function of
(seed, step)) or one seed per example [N, 2] (the evaluation's: (seed, the example's index in
the test set)); with the latter an example's random numbers do not depend on its batch, so a
figure does not depend on --batch_size or on the other images of the batch.
"""
import math

import tensorflow as tf

from aalp_tf import losses


def clip_to_image(x):
    return tf.clip_by_value(x, 0.0, 1.0)


def per_example(values):
    """[N] -> [N, 1, 1, 1], to scale or select whole images."""
    return tf.reshape(values, [-1, 1, 1, 1])


def _l2(v):
    return tf.sqrt(tf.reduce_sum(tf.square(v), axis=[1, 2, 3]))


# ---- randomness: a batch seed [2] or a seed per example [N, 2] ------------------------------

_MASK = 0xFFFFFFFF


def _mix(h):
    """A bijective 32-bit avalanche (Wellons' lowbias32): counter-based random bits per example,
    which TF's stateless ops (one seed per call) cannot vectorise."""
    for shift, factor in ((16, 0x7FEB352D), (15, 0x846CA68B)):
        h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, tf.constant(shift, tf.uint32)))
        h = h * tf.constant(factor, tf.uint32)
    return tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, tf.constant(16, tf.uint32)))


def _words(seed):
    """[N, 2] int64 seeds -> one uint32 key per example."""
    s = tf.cast(tf.bitwise.bitwise_and(seed, _MASK), tf.uint32)
    return _mix(tf.bitwise.bitwise_xor(_mix(s[:, 0]), s[:, 1]) + tf.constant(0x9E3779B9, tf.uint32))


def as_seed(seed):
    return tf.cast(tf.convert_to_tensor(seed), tf.int64)


def example_seeds(seed, index):
    """One seed per example, [N, 2]: (seed, the example's global index)."""
    index = tf.cast(index, tf.int64)
    return tf.stack([tf.fill(tf.shape(index), tf.cast(seed, tf.int64)), index], axis=1)


def fold(seed, *data):
    """A new seed of the same form for each value of `data` (a stream, a restart, a query)."""
    seed = as_seed(seed)
    for value in data:
        if seed.shape.rank == 1:
            seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(value, tf.int64))
        else:
            key = _words(seed)
            word = _mix(tf.cast(tf.bitwise.bitwise_and(tf.cast(value, tf.int64), _MASK),
                                tf.uint32) + tf.constant(0x632BE5AB, tf.uint32))
            seed = tf.cast(tf.stack([key, _mix(tf.bitwise.bitwise_xor(key, word))], 1), tf.int64)
    return seed


def restart_seed(seed, restart):
    """Restart r's seed: seed + (0, r) for a batch seed (as before per-example seeds existed)."""
    seed = as_seed(seed)
    if seed.shape.rank == 1:
        return seed + tf.constant([0, restart], tf.int64)
    return fold(seed, restart)


def random_uniform(shape, seed, minval=0.0, maxval=1.0, dtype=tf.float32):
    """Uniform numbers of `shape` ([N, ...]) in [minval, maxval); per example with [N, 2]."""
    seed = as_seed(seed)
    if seed.shape.rank == 1:
        return tf.random.stateless_uniform(shape, seed=seed, minval=minval, maxval=maxval,
                                           dtype=dtype)
    shape = tf.convert_to_tensor(shape, tf.int32)
    count = tf.reduce_prod(shape[1:])
    key = _words(seed)[:, None]
    counter = _mix(tf.cast(tf.range(count), tf.uint32)[None, :]
                   + tf.constant(0x2545F491, tf.uint32))
    bits = _mix(_mix(tf.bitwise.bitwise_xor(key, counter)) + key)
    unit = tf.cast(tf.bitwise.right_shift(bits, tf.constant(8, tf.uint32)),
                   tf.float32) * (1.0 / (1 << 24))  # 24 bits: exact in float32, below 1
    unit = tf.reshape(unit, shape)
    if dtype.is_integer:
        span = tf.cast(maxval - minval, tf.float32)
        return tf.minimum(tf.cast(tf.floor(unit * span), dtype) + minval, maxval - 1)
    return tf.cast(minval, dtype) + unit * tf.cast(maxval - minval, dtype)


def random_normal(shape, seed):
    """Standard normal numbers of `shape`; per example with [N, 2] seeds (Box-Muller)."""
    seed = as_seed(seed)
    if seed.shape.rank == 1:
        return tf.random.stateless_normal(shape, seed=seed)
    u1, u2 = random_uniform(shape, fold(seed, 0)), random_uniform(shape, fold(seed, 1))
    return tf.sqrt(-2.0 * tf.math.log(1.0 - u1)) * tf.cos(2.0 * math.pi * u2)


def gather_seed(seed, indices):
    """The seeds of a subset of the batch's examples (a batch seed is everyone's)."""
    seed = as_seed(seed)
    return seed if seed.shape.rank == 1 else tf.gather(seed, indices)


# ---- threat models (as MadryLab robustness' attack_steps.py) --------------------------------


class LinfStep:
    """The L-inf ball of radius epsilon: ||delta||_inf <= epsilon."""

    name = "linf"

    @staticmethod
    def project(x_adv, x, *, epsilon):
        return clip_to_image(tf.clip_by_value(x_adv, x - epsilon, x + epsilon))

    @staticmethod
    def step(x, grad, *, size):
        """The steepest ascent step of this norm: size * sign(grad)."""
        return x + size * tf.sign(grad)

    @staticmethod
    def direction(grad):
        """The steepest ascent direction, unnormalised: sign(grad)."""
        return tf.sign(grad)

    @staticmethod
    def random_perturb(shape, *, epsilon, seed):
        return random_uniform(shape, seed, minval=-epsilon, maxval=epsilon)

    @staticmethod
    def norm(delta):
        return tf.reduce_max(tf.abs(delta), axis=[1, 2, 3])


class L2Step:
    """The L2 ball of radius epsilon: ||delta||_2 <= epsilon (epsilon in pixel units)."""

    name = "l2"

    @staticmethod
    def project(x_adv, x, *, epsilon):
        # clipping to [0, 1] after the ball's projection moves no coordinate away from x, which
        # is in [0, 1]: the result is in both sets
        delta = x_adv - x
        scale = tf.minimum(1.0, epsilon / tf.maximum(_l2(delta), 1e-12))
        return clip_to_image(x + delta * per_example(scale))

    @staticmethod
    def step(x, grad, *, size):
        """The steepest ascent step of this norm: size * grad / ||grad||_2."""
        return x + size * grad / per_example(_l2(grad) + 1e-12)

    @staticmethod
    def direction(grad):
        """The steepest ascent direction, unnormalised: grad itself."""
        return grad

    @staticmethod
    def random_perturb(shape, *, epsilon, seed):
        """A point of the sphere of radius epsilon in a uniformly random direction."""
        direction = random_normal(shape, seed)
        return epsilon * direction / per_example(_l2(direction) + 1e-12)

    @staticmethod
    def norm(delta):
        return _l2(delta)


THREAT_MODELS = {"linf": LinfStep, "l2": L2Step}


def threat_model(norm):
    """The threat model named `norm` ("linf" or "l2"); one line for anything else."""
    if norm not in THREAT_MODELS:
        raise ValueError(f"Invalid value received for argument `norm`. Expected one of "
                         f"{sorted(THREAT_MODELS)}. Received: norm={norm!r}")
    return THREAT_MODELS[norm]


def project(x_adv, x, *, epsilon):
    """Nearest point to x_adv inside the L-inf ball of radius epsilon around x and inside [0, 1]."""
    return LinfStep.project(x_adv, x, epsilon=epsilon)


def cross_entropy_objective(labels):
    return lambda logits: losses.cross_entropy(logits=logits, labels=labels)


def cw_objective(labels):
    return lambda logits: losses.cw_margin(logits=logits, labels=labels)


def input_gradient(logits_fn, x, objective):
    """d objective / d x for every example at once, and the logits at x."""
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        logits = logits_fn(x)
        value = tf.reduce_sum(objective(logits))
    # ZERO, not None, for a model whose output ignores its input: attacks then stand still and
    # the evaluation's nonzero_gradients check reports it, instead of a crash in tf.sign(None).
    return tape.gradient(value, x, unconnected_gradients=tf.UnconnectedGradients.ZERO), logits


def loop_input_gradient(logits_fn, objective):
    """x -> input_gradient(logits_fn, x, objective), as a function graph of its own: what an
    attack's loop body calls.

    Why not inline it into the loop: TensorFlow's oneDNN pass replaces MaxPoolGrad with its fast
    kernel only when it visits the matching MaxPool first, and in a while loop's body (a cycle
    once lowered) the order it visits nodes in is not fixed. Inlined, a LeNet PGD loop kept
    TF's slow MaxPoolGrad in 8 of 8 fresh processes (PGD-40 took 1.16x its floor at batch 128);
    as a function of its own, which is acyclic, it got oneDNN's in all 8
    (benchmarks/maxpoolgrad_rewrite.py, benchmarks/RESULTS.md question 3).
    """
    return tf.function(lambda x: input_gradient(logits_fn, x, objective),
                       experimental_attributes={"_noinline": True})


def misclassified(logits, labels):
    """[N] bool: the model's top class is not the label."""
    return tf.not_equal(tf.argmax(logits, axis=-1, output_type=tf.int64), tf.cast(labels, tf.int64))


def where_examples(condition, a, b):
    """Per-example select between two image batches."""
    return tf.where(per_example(condition), a, b)


@tf.function
def fgsm(logits_fn, x, labels, *, epsilon, objective=None, norm="linf"):
    """Fast Gradient Sign Method: one step of size epsilon from the clean image (for L2, the
    normalised gradient's: the fast gradient method)."""
    threat = threat_model(norm)
    objective = objective or cross_entropy_objective(labels)
    x = tf.convert_to_tensor(x, tf.float32)
    grad, _ = input_gradient(logits_fn, x, objective)
    return threat.project(threat.step(x, grad, size=epsilon), x, epsilon=epsilon)


def _pgd_run(logits_fn, x, labels, *, threat, epsilon, step_size, steps, objective,
             random_start, seed, track, noise=None):
    """One PGD run. With `track`, returns the first iterate that fools the model (if any)."""
    x_adv = x
    if random_start and noise is None:
        noise = threat.random_perturb(tf.shape(x), epsilon=epsilon, seed=seed)
    if noise is not None:
        x_adv = threat.project(x + noise, x, epsilon=epsilon)
    best, found = x_adv, tf.zeros(tf.shape(x)[:1], tf.bool)
    gradient = loop_input_gradient(logits_fn, objective)
    for _ in tf.range(steps):
        grad, logits = gradient(x_adv)
        if track:
            fooled = misclassified(logits, labels) & ~found
            best = where_examples(fooled, x_adv, best)
            found = found | fooled
        x_adv = threat.project(threat.step(x_adv, grad, size=step_size), x, epsilon=epsilon)
    if not track:
        return x_adv, found
    fooled = misclassified(logits_fn(x_adv), labels) & ~found
    best = where_examples(found, best, x_adv)
    return best, found | fooled


@tf.function
def pgd(logits_fn, x, labels, *, epsilon, step_size, steps, objective=None, random_start=True,
        seed=(0, 0), restarts=1, keep_best=False, noise=None, norm="linf"):
    """Projected gradient descent (Madry et al.) on the norm's ball: PGD-k with k = steps.

    Args:
      logits_fn: images -> logits, the model in inference mode.
      x: images in [0, 1], [N, H, W, C].
      labels: true labels [N].
      epsilon, step_size: in pixel units of [0, 1].
      steps: number of steepest-ascent steps (fixed, so the graph is static).
      objective: logits -> [N] to maximise; default cross-entropy with `labels`.
      random_start: start from a random point of the epsilon-ball (L-inf: uniform in the cube;
        L2: on the sphere).
      seed: stateless seed, [2] for the batch or [N, 2] per example; restart r uses
        restart_seed(seed, r).
      restarts: independent runs; per example the first one that fools the model wins.
      keep_best: return, per example, the first iterate that fooled the model rather than the
        last iterate (for evaluation: an adversarial example found at any step counts).
      noise: the first run's random start perturbation, [N, H, W, C] inside the ball, instead of
        one drawn from `seed` (the trainer draws it for the global batch, so that N replicas
        start where one device would).
      norm: the threat model, "linf" or "l2" (THREAT_MODELS).

    Returns:
      Adversarial images, within epsilon of x and in [0, 1].
    """
    threat = threat_model(norm)
    objective = objective or cross_entropy_objective(labels)
    x = tf.convert_to_tensor(x, tf.float32)
    track = keep_best or restarts > 1
    result, found = None, None
    for restart in range(restarts):
        x_adv, fooled = _pgd_run(logits_fn, x, labels, threat=threat, epsilon=epsilon,
                                 step_size=step_size, steps=steps, objective=objective,
                                 random_start=random_start, seed=restart_seed(seed, restart),
                                 track=track, noise=noise if restart == 0 else None)
        if result is None:
            result, found = x_adv, fooled
        else:
            result = where_examples(found, result, x_adv)
            found = found | fooled
    return result


# A tf.function itself so that the objective's closure is made while tracing: called eagerly,
# a fresh closure per call would be a new argument of `pgd` and retrace it every call.
@tf.function
def cw(logits_fn, x, labels, *, epsilon, step_size, steps, random_start=True, seed=(0, 0),
       restarts=1, keep_best=False, norm="linf"):
    """CW-k: the Carlini-Wagner margin loss maximised by PGD (as in Madry et al., TRADES)."""
    return pgd(logits_fn, x, labels, epsilon=epsilon, step_size=step_size, steps=steps,
               objective=cw_objective(labels), random_start=random_start, seed=seed,
               restarts=restarts, keep_best=keep_best, norm=norm)
