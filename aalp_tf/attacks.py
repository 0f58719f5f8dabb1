"""L-inf attacks as tf.function graphs over a logits function: FGSM, PGD-k, CW-k.

Pure: each takes `logits_fn(images) -> logits` (which must run the model in inference mode),
images in [0, 1], true labels and keyword-only settings; it never touches optimizers, flags,
files or the model's training mode. Every output lies in the epsilon-ball around the input and
in [0, 1].

An `objective(logits) -> [N]` is the per-example value the attack maximises; by default the
cross-entropy with the true labels.
"""
import tensorflow as tf

from aalp_tf import losses


def clip_to_image(x):
    return tf.clip_by_value(x, 0.0, 1.0)


def project(x_adv, x, *, epsilon):
    """Nearest point to x_adv inside the L-inf ball of radius epsilon around x and inside [0, 1]."""
    return clip_to_image(tf.clip_by_value(x_adv, x - epsilon, x + epsilon))


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
    return tf.where(tf.reshape(condition, [-1, 1, 1, 1]), a, b)


@tf.function
def fgsm(logits_fn, x, labels, *, epsilon, objective=None):
    """Fast Gradient Sign Method: one step of size epsilon from the clean image."""
    objective = objective or cross_entropy_objective(labels)
    x = tf.convert_to_tensor(x, tf.float32)
    grad, _ = input_gradient(logits_fn, x, objective)
    return project(x + epsilon * tf.sign(grad), x, epsilon=epsilon)


def _pgd_run(logits_fn, x, labels, *, epsilon, step_size, steps, objective, random_start, seed,
             track, noise=None):
    """One PGD run. With `track`, returns the first iterate that fools the model (if any)."""
    x_adv = x
    if random_start and noise is None:
        noise = tf.random.stateless_uniform(tf.shape(x), seed=seed, minval=-epsilon,
                                            maxval=epsilon)
    if noise is not None:
        x_adv = project(x + noise, x, epsilon=epsilon)
    best, found = x_adv, tf.zeros(tf.shape(x)[:1], tf.bool)
    gradient = loop_input_gradient(logits_fn, objective)
    for _ in tf.range(steps):
        grad, logits = gradient(x_adv)
        if track:
            fooled = misclassified(logits, labels) & ~found
            best = where_examples(fooled, x_adv, best)
            found = found | fooled
        x_adv = project(x_adv + step_size * tf.sign(grad), x, epsilon=epsilon)
    if not track:
        return x_adv, found
    fooled = misclassified(logits_fn(x_adv), labels) & ~found
    best = where_examples(found, best, x_adv)
    return best, found | fooled


@tf.function
def pgd(logits_fn, x, labels, *, epsilon, step_size, steps, objective=None, random_start=True,
        seed=(0, 0), restarts=1, keep_best=False, noise=None):
    """Projected gradient descent (Madry et al.) on the L-inf ball: PGD-k with k = steps.

    Args:
      logits_fn: images -> logits, the model in inference mode.
      x: images in [0, 1], [N, H, W, C].
      labels: true labels [N].
      epsilon, step_size: in pixel units of [0, 1].
      steps: number of signed-gradient steps (fixed, so the graph is static).
      objective: logits -> [N] to maximise; default cross-entropy with `labels`.
      random_start: start from a uniform point of the epsilon-ball.
      seed: stateless seed [2] for the random start; restart r uses seed + (0, r).
      restarts: independent runs; per example the first one that fools the model wins.
      keep_best: return, per example, the first iterate that fooled the model rather than the
        last iterate (for evaluation: an adversarial example found at any step counts).
      noise: the first run's random start perturbation, [N, H, W, C] in [-epsilon, epsilon],
        instead of one drawn from `seed` (the trainer draws it for the global batch, so that N
        replicas start where one device would).

    Returns:
      Adversarial images, within epsilon of x and in [0, 1].
    """
    objective = objective or cross_entropy_objective(labels)
    x = tf.convert_to_tensor(x, tf.float32)
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    track = keep_best or restarts > 1
    result, found = None, None
    for restart in range(restarts):
        run_seed = seed + tf.constant([0, restart], tf.int64)
        x_adv, fooled = _pgd_run(logits_fn, x, labels, epsilon=epsilon, step_size=step_size,
                                 steps=steps, objective=objective, random_start=random_start,
                                 seed=run_seed, track=track,
                                 noise=noise if restart == 0 else None)
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
       restarts=1, keep_best=False):
    """CW-k: the Carlini-Wagner margin loss maximised by L-inf PGD (as in Madry et al., TRADES)."""
    return pgd(logits_fn, x, labels, epsilon=epsilon, step_size=step_size, steps=steps,
               objective=cw_objective(labels), random_start=random_start, seed=seed,
               restarts=restarts, keep_best=keep_best)
