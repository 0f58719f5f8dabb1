"""The Square attack (Andriushchenko et al. 2020), L-inf and L2, as tf.function graph pieces:
gradient-free random search on the margin z_y - max_{j != y} z_j, one forward pass per query.

One search loop serves both norms; each norm brings its own start and proposal (SEARCHES), the
two pieces of the paper that differ: L-inf sets one random square to a vertex of the ball, L2
moves mass between two squares with a pattern of nested rectangles. Every proposal lies in the
epsilon-ball and in [0, 1]. Randomness is drawn per example when the seed is [N, 2] (see
`attacks`), so an example's search does not depend on the rest of its batch.
"""
import math

import tensorflow as tf

from aalp_tf import attacks, losses

P_INIT = 0.8  # AutoAttack's initial share of pixels Square changes per query
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)  # of a 10000-query budget
_fold = attacks.fold


def square_share(query, *, queries, p_init, rescale_schedule):
    """The share p of the image the square covers at this query: p_init halves at the paper's
    query counts (`rescale_schedule`: counted as if the budget were 10000 queries; AutoAttack's
    standard version does not rescale)."""
    at = tf.cast(query, tf.float32) * ((10000.0 / queries) if rescale_schedule else 1.0)
    halvings = tf.reduce_sum(tf.cast(at > tf.constant(_HALVINGS, tf.float32), tf.float32))
    return p_init * tf.pow(0.5, halvings)


def _random_signs(shape, seed):
    return tf.where(attacks.random_uniform(shape, seed) < 0.5, -1.0, 1.0)


def _corners(n, side, seed, sizes):
    """[N] top-left corners per axis, uniform over the positions where a square fits."""
    return [attacks.random_uniform([n], _fold(seed, axis), minval=0, maxval=size - side + 1,
                                   dtype=tf.int32) for axis, size in enumerate(sizes)]


def _window(corner, side, sizes):
    """[N, H, W, 1] bool: the square of `side` at `corner`."""
    inside = [(tf.range(size)[None, :] >= c[:, None]) & (tf.range(size)[None, :] < c[:, None] + side)
              for c, size in zip(corner, sizes)]
    return (inside[0][:, :, None] & inside[1][:, None, :])[..., None]


# ---- L-inf ----------------------------------------------------------------------------------


def _linf_start(x, *, epsilon, seed):
    """Vertical stripes: a sign per column and channel."""
    width, channels = x.shape[2:]
    return attacks.clip_to_image(x + epsilon * _random_signs([tf.shape(x)[0], 1, width, channels],
                                                             _fold(seed, 0)))


def _linf_proposal(x, x_best, *, epsilon, share, seed):
    """x_best with one random square (per example) set to x +- epsilon, a sign per channel."""
    n, (height, width, channels) = tf.shape(x)[0], x.shape[1:]
    side = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(share * float(height * width))), tf.int32),
                            1, min(height, width) - 1)
    window = _window(_corners(n, side, seed, (height, width)), side, (height, width))
    signs = _random_signs([n, 1, 1, channels], _fold(seed, 2))
    same = tf.reduce_all(~window | (tf.abs(attacks.clip_to_image(x + epsilon * signs) - x_best)
                                    < 1e-7), axis=[1, 2, 3])
    signs = tf.where(attacks.per_example(same), -signs, signs)  # a proposal must change something
    return tf.where(window, attacks.clip_to_image(x + epsilon * signs), x_best)


# ---- L2 -------------------------------------------------------------------------------------


def _inverse_square_sums(size):
    """S[k] = sum_{j=1..k} 1 / j^2, k = 0..size."""
    return tf.constant([sum(1.0 / j ** 2 for j in range(1, k + 1)) for k in range(size + 1)],
                       tf.float32)


def _pattern(corner, side, transpose, sizes):
    """[N, H, W] the L2 Square's square pattern at `corner`, zero outside: its top half
    (side // 2 rows) +, its bottom half -, each a sum of 1/(k+1)^2 over the nested rectangles k
    around its centre that contain the pixel, each half of unit L2 norm, the whole of norm 1;
    transposed where `transpose`."""
    i = tf.range(sizes[0])[None, :, None] - corner[0][:, None, None]
    j = tf.range(sizes[1])[None, None, :] - corner[1][:, None, None]
    inside = (i >= 0) & (i < side) & (j >= 0) & (j < side)
    flip = transpose[:, None, None]
    i, j = tf.where(flip, j, i), tf.where(flip, i, j)
    half = side // 2
    top = i < half
    rows = tf.where(top, half, side - half)
    row = tf.where(top, i, i - half)
    ring = tf.maximum(tf.abs(row - rows // 2), tf.abs(j - side // 2))  # innermost rectangle
    outer = tf.maximum(rows // 2 + 1, side // 2 + 1)  # rectangles 0..outer-1
    sums = _inverse_square_sums(max(sizes) + 1)
    value = tf.gather(sums, tf.clip_by_value(outer, 0, max(sizes) + 1)) - tf.gather(
        sums, tf.clip_by_value(ring, 0, max(sizes) + 1))
    value = tf.where(inside & (ring < outer), value, 0.0)
    norm = lambda part: tf.sqrt(tf.reduce_sum(tf.square(tf.where(part, value, 0.0)), [1, 2],
                                              keepdims=True))
    signed = tf.where(top, value / (norm(top & inside) + 1e-12),
                      -value / (norm(~top & inside) + 1e-12))
    return signed / math.sqrt(2.0)


def _l2_normalise(delta):
    return delta / attacks.per_example(attacks.L2Step.norm(delta) + 1e-12)


def _l2_start(x, *, epsilon, seed):
    """A grid of squares of side H // 5, each the pattern with a random sign per channel, scaled
    to the sphere of radius epsilon."""
    n, (height, width, channels) = tf.shape(x)[0], x.shape[1:]
    side = height // 5
    offset = (height - 5 * side) // 2
    delta = tf.zeros_like(x)
    for a in range(height // side):
        for b in range(width // side):
            cell = _fold(seed, 0, a, b)
            corner = [tf.fill([n], offset + a * side), tf.fill([n], offset + b * side)]
            flip = attacks.random_uniform([n], _fold(cell, 0)) < 0.5
            pattern = _pattern(corner, side, flip, (height, width))[..., None]
            delta += pattern * _random_signs([n, 1, 1, channels], _fold(cell, 1))
    return attacks.clip_to_image(x + epsilon * _l2_normalise(delta))


def _l2_proposal(x, x_best, *, epsilon, share, seed):
    """Moves the perturbation's mass out of a second random square into a first one, where the
    pattern (random sign per channel) joins the old content; then back onto the sphere."""
    n, (height, width, channels) = tf.shape(x)[0], x.shape[1:]
    sizes = (height, width)
    side = tf.maximum(tf.cast(tf.round(tf.sqrt(share * float(height * width))), tf.int32), 3)
    largest = (min(sizes) - 2) // 2 * 2 + 1  # the largest odd side with two positions
    side = tf.minimum(side + 1 - side % 2, largest)  # odd: the pattern has a centre
    corner, corner_2 = _corners(n, side, _fold(seed, 0), sizes), _corners(n, side,
                                                                          _fold(seed, 1), sizes)
    first, second = _window(corner, side, sizes), _window(corner_2, side, sizes)
    delta = x_best - x
    per_channel = lambda v: tf.sqrt(tf.reduce_sum(tf.square(v), axis=[1, 2], keepdims=True))
    in_first = tf.where(first, delta, 0.0)
    flip = attacks.random_uniform([n], _fold(seed, 2)) < 0.5
    pattern = _pattern(corner, side, flip, sizes)[..., None]
    moved = (pattern * _random_signs([n, 1, 1, channels], _fold(seed, 3))
             + in_first / (per_channel(in_first) + 1e-12))
    room = tf.maximum(epsilon ** 2 - tf.square(attacks.L2Step.norm(delta)), 0.0) / channels
    both = attacks.L2Step.norm(tf.where(first | second, delta, 0.0))
    moved = moved / (per_channel(moved) + 1e-12) * attacks.per_example(
        tf.sqrt(room + tf.square(both)))
    delta = tf.where(first, moved, tf.where(second, 0.0, delta))
    return attacks.clip_to_image(x + epsilon * _l2_normalise(delta))


# ---- the search -----------------------------------------------------------------------------

SEARCHES = {"linf": (_linf_start, _linf_proposal), "l2": (_l2_start, _l2_proposal)}


def square_run(logits_fn, x, labels, *, epsilon, queries, seed, p_init=P_INIT, norm="linf",
               rescale_schedule=True):
    """One Square run: `queries` forward passes, no gradient; (images, [N] bool fooled)."""
    attacks.threat_model(norm)  # the same one-line refusal as every attack's
    start, propose = SEARCHES[norm]
    margin = lambda images: -losses.cw_margin(logits=logits_fn(images), labels=labels)
    x_best = start(x, epsilon=epsilon, seed=seed)

    def body(query, x_best, best):
        share = square_share(query, queries=queries, p_init=p_init,
                             rescale_schedule=rescale_schedule)
        proposal = propose(x, x_best, epsilon=epsilon, share=share, seed=_fold(seed, 1, query))
        value = margin(proposal)
        accept = (value < best) & (best > 0.0)  # fooled examples stay where they are
        return (query + 1, attacks.where_examples(accept, proposal, x_best),
                tf.where(accept, value, best))

    keep_going = lambda query, _, best: (query < queries) & tf.reduce_any(best > 0.0)
    _, x_best, _ = tf.while_loop(keep_going, body, (tf.constant(1), x_best, margin(x_best)))
    return x_best, attacks.misclassified(logits_fn(x_best), labels)
