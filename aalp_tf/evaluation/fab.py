"""FAB-T, the targeted Fast Adaptive Boundary attack (Croce & Hein 2020), L-inf and L2, as one
tf.function graph: AutoAttack's third attack.

FAB looks for the *smallest* perturbation that moves a point across the decision boundary
between its class y and a target class t. Each step linearises f = z_t - z_y at the iterate x_k,
projects both x_k and the clean x onto the hyperplane f(x_k) + grad·(z - x_k) = 0 (inside the
image box), and moves to a convex combination of the two projections, extrapolated by `eta`,
with at most `alpha_max` of the weight on the clean image's. Once a step crosses the boundary it
is recorded if it is the closest crossing so far, and the iterate is pulled back towards x by
`beta`. An example counts as fooled only if its closest crossing lies inside the epsilon-ball
and the model, queried again there, misclassifies it; every other example gets its clean image
back, so the output is always in the ball and in [0, 1].

Same conventions as `attacks`: pure, fixed step counts, stateless seeds (only restarts after the
first start at random; AutoAttack's standard FAB-T has one restart and so draws nothing).
"""
import tensorflow as tf

from aalp_tf import attacks

ALPHA_MAX = 0.1  # AutoAttack's FAB settings: the largest weight of the clean image's projection
ETA = 1.05  # the extrapolation of each projection step
BETA = 0.9  # the pull back towards x after a step that crossed the boundary
STEPS = 100  # AutoAttack's standard n_iter
_STREAM_FAB = 4  # apart from autoattack's APGD-CE (1), APGD-T (2) and Square (3) streams


def hyperplane_projection(threat, points, w, c):
    """The smallest step d (in the threat model's norm) with w·d = c that keeps points + d in
    [0, 1]; where no such step exists, the box corner that gets w·d closest to c.

    Per example both norms reduce to one problem: with s = |threat.direction(w)| (1 for L-inf,
    |w| for L2), the optimal step is d_i = sign(w_i) min(lambda s_i, r_i), where r_i is the room
    towards the box in w_i's direction, and w·d = sum_i a_i min(lambda, b_i) with a_i = |w_i| s_i,
    b_i = r_i / s_i: nondecreasing and piecewise linear in lambda, so the smallest lambda that
    reaches c follows from cumulative sums over the sorted breakpoints b.

    Args:
      threat: attacks.LinfStep or attacks.L2Step.
      points, w: [M, D]; c: [M], the hyperplane w·z = w·points + c.

    Returns:
      d, [M, D].
    """
    flip = tf.where(c < 0.0, -1.0, 1.0)[:, None]  # make c >= 0; w's sign follows
    w, c = w * flip, c * flip[:, 0]
    room = tf.where(w > 0.0, 1.0 - points, points)
    s = tf.abs(threat.direction(w))
    used = s > 0.0
    a = tf.where(used, tf.abs(w) * s, 0.0)
    b = tf.where(used, room / tf.where(used, s, 1.0), 0.0)
    order = tf.argsort(b, axis=1)
    a_sorted, b_sorted = tf.gather(a, order, batch_dims=1), tf.gather(b, order, batch_dims=1)
    a_before = tf.cumsum(a_sorted, axis=1, exclusive=True)
    ab_before = tf.cumsum(a_sorted * b_sorted, axis=1, exclusive=True)
    total = tf.reduce_sum(a, axis=1, keepdims=True)
    reached = ab_before + b_sorted * (total - a_before)  # w·d at lambda = b_(k)
    k = tf.reduce_sum(tf.cast(reached < c[:, None], tf.int32), axis=1)  # first k reaching c
    feasible = k < tf.shape(w)[1]
    k = tf.minimum(k, tf.shape(w)[1] - 1)[:, None]
    lam = ((c - tf.gather(ab_before, k, batch_dims=1)[:, 0])
           / tf.maximum(total[:, 0] - tf.gather(a_before, k, batch_dims=1)[:, 0], 1e-12))
    lam = tf.where(feasible, tf.maximum(lam, 0.0), float("inf"))[:, None]
    # where s = 0 (w_i = 0) the pixel does not move; lam * s would be inf * 0 there
    return tf.where(used, tf.sign(w) * tf.minimum(lam * s, room), 0.0)


def _flat(x):
    return tf.reshape(x, [tf.shape(x)[0], -1])


def _boundary_step(threat, x_k, x, f, grad, *, alpha_max, eta):
    """One FAB step: projections of x_k and x onto the linearised boundary, then their biased
    convex combination, clipped to [0, 1]."""
    n = tf.shape(x)[0]
    w = _flat(grad)
    c_k = -f  # w·(z - x_k) = -f(x_k)
    c_0 = -f + tf.reduce_sum(w * (_flat(x_k) - _flat(x)), axis=1)
    d = hyperplane_projection(threat, tf.concat([_flat(x_k), _flat(x)], 0),
                              tf.concat([w, w], 0), tf.concat([c_k, c_0], 0))
    d = tf.reshape(d, tf.concat([[2 * n], tf.shape(x)[1:]], 0))
    d_k, d_0 = d[:n], d[n:]
    a_k = tf.maximum(threat.norm(d_k), 1e-8)
    a_0 = tf.maximum(threat.norm(d_0), 1e-8)
    alpha = attacks.per_example(tf.clip_by_value(a_k / (a_k + a_0), 0.0, alpha_max))
    return attacks.clip_to_image((x_k + eta * d_k) * (1.0 - alpha) + (x + eta * d_0) * alpha)


def fab_run(logits_fn, x, labels, targets, *, epsilon, steps=STEPS, norm="linf",
            random_start=False, seed=(0, 0), alpha_max=ALPHA_MAX, eta=ETA, beta=BETA):
    """One targeted FAB run towards `targets` [N]; returns (images, [N] bool fooled).

    `random_start`: start at x plus half a random point of the ball (AutoAttack does so from the
    second restart on); otherwise at x, with no randomness at all.
    """
    threat = attacks.threat_model(norm)
    x = tf.convert_to_tensor(x, tf.float32)
    labels, targets = tf.cast(labels, tf.int64), tf.cast(targets, tf.int64)
    pick = lambda logits, classes: tf.gather(logits, classes, axis=1, batch_dims=1)
    objective = lambda logits: pick(logits, targets) - pick(logits, labels)  # < 0: not fooled
    gradient = attacks.loop_input_gradient(logits_fn, objective)
    start = x
    if random_start is not False:  # a Python False draws nothing; a bool tensor picks per run
        noise = threat.random_perturb(tf.shape(x), epsilon=epsilon, seed=seed)
        start = tf.where(random_start, attacks.clip_to_image(x + 0.5 * noise), x)
    n = tf.shape(x)[0]

    def body(k, x_k, best, distance):
        grad, logits = gradient(x_k)
        x_k = _boundary_step(threat, x_k, x, objective(logits), grad, alpha_max=alpha_max,
                             eta=eta)
        crossed = attacks.misclassified(logits_fn(x_k), labels)
        gap = threat.norm(x_k - x)
        closer = crossed & (gap < distance)
        best = attacks.where_examples(closer, x_k, best)
        distance = tf.where(closer, gap, distance)
        x_k = attacks.where_examples(crossed, x + beta * (x_k - x), x_k)
        return k + 1, x_k, best, distance

    _, _, best, distance = tf.while_loop(
        lambda k, *_: k < steps, body,
        (tf.constant(0), start, x, tf.fill([n], float("inf"))))
    inside = distance <= epsilon
    result = attacks.where_examples(inside, best, x)
    # asked again: a crossing counts only where the model misclassifies the returned image
    return result, inside & attacks.misclassified(logits_fn(result), labels)


def fab_t_run(logits_fn, index, x, labels, seed, *, epsilon, steps, restarts, norm):
    """Run `index` of FAB-T: target rank index // restarts + 2 of the clean logits (rank 1 is
    the top class), restart index % restarts (random start from the second on)."""
    logits = logits_fn(x)
    rank = index // restarts + 1
    order = tf.argsort(logits, axis=-1, direction="DESCENDING")

    def attack():
        return fab_run(logits_fn, x, labels, tf.gather(order, rank, axis=1), epsilon=epsilon,
                       steps=steps, norm=norm, random_start=index % restarts > 0 if restarts > 1
                       else False, seed=attacks.fold(seed, _STREAM_FAB, index))

    return tf.cond(rank < tf.shape(order)[1], attack,
                   lambda: (x, tf.zeros(tf.shape(labels), tf.bool)))
