"""Adversarial weight perturbation (AWP; Wu et al., "Adversarial weight perturbation helps robust
generalization", NeurIPS 2020), as an option of every method.

A train step with AWP:
1. makes the adversarial examples at the weights w (as without AWP);
2. takes one ascent step on the weights: the gradient g of the method's own loss (on the
   step's branch inputs, the adversarial examples among them) gives, per weight tensor,
   v = gamma · ||w|| · g / ||g||: layer-wise and relative to each weight's norm;
3. computes the method's loss and its gradient at w + v;
4. applies that gradient to w: the perturbation is gone before the optimizer's update.

As in the paper's code (`diff_in_weights`), only tensors of rank >= 2 are perturbed (kernels of
dense and convolution layers), not biases or normalisation parameters. Its proxy model is a copy,
so the ascent pass leaves the model's state alone: here it runs in a `keras.StatelessScope`,
which keeps batch-norm statistics and seed states as they were. The perturbed pass runs in a
scope that maps every kernel to w + v, so the variables never hold w + v and nothing needs to
be subtracted; its state updates (batch-norm statistics at w + v, as the paper's main pass makes
them) are kept afterwards (`keep_state_updates`). Adding v to the weights and subtracting it
after the update is the same step for any optimizer whose update does not read the weights
(Adam, SGD without weight decay).

Under a distribution strategy the ascent gradient is summed over the replicas (each replica's
loss is divided by the global batch), so every replica perturbs by the v one device would.
Under mixed precision it is taken of the loss-scaled loss, against float16 underflow; v does
not depend on the scale, and a non-finite g (an overflowed scale) leaves that tensor
unperturbed for the step.
"""
import contextlib

import keras
import tensorflow as tf

from aalp_tf import rules

EPS = 1e-20  # the paper's code's, against a zero gradient


def check_gamma(gamma) -> None:
    """AdversarialModel's `awp_gamma=`, refused in one line (the rule --awp_gamma shares)."""
    with rules.keyword_arguments():
        rules.AWP_GAMMA.check(gamma)


def perturbed_variables(model) -> list:
    """The trainable variables AWP perturbs: those of rank >= 2."""
    return [v for v in model.trainable_variables if len(v.shape) >= 2]


def relative_perturbation(weight, gradient, *, gamma):
    """v = gamma · ||w|| · g / ||g|| for one weight tensor (Frobenius norms); zero when g is not
    finite."""
    weight = tf.cast(weight, tf.float32)
    gradient = tf.cast(gradient, tf.float32)
    gradient_norm = tf.norm(gradient)
    v = gamma * tf.norm(weight) * gradient / (gradient_norm + EPS)
    return tf.where(tf.math.is_finite(gradient_norm), v, tf.zeros_like(v))


def _mapping(model, deltas=None):
    """(variable, value) of every trainable variable, read now (under the caller's tape): the
    scope then serves these values, and regularizers find a value for every weight."""
    deltas = deltas or {}
    return [(v, tf.convert_to_tensor(v) + deltas[id(v)] if id(v) in deltas else v)
            for v in model.trainable_variables]


def ascent(model, inputs, labels, sample_weight, *, gamma) -> dict:
    """The step's weight perturbation, {id(variable): v}, from one forward and backward pass
    of the method's loss (`model.method_loss`) at the current weights, which changes no state.
    """
    variables = perturbed_variables(model)
    with tf.GradientTape() as tape, keras.StatelessScope(state_mapping=_mapping(model),
                                                          collect_losses=True):
        *_, loss = model.method_loss(inputs, labels, sample_weight, tape)
    grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
             for v, g in zip(variables, tape.gradient(loss, variables))]
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
    return {id(v): relative_perturbation(v, g, gamma=gamma) for v, g in zip(variables, grads)}


def perturbed(model, deltas):
    """A scope in which the model computes with w + v (`deltas` from `ascent`); a no-op for
    None (AWP off). Enter it under the tape whose gradient the step applies."""
    if deltas is None:
        return contextlib.nullcontext()
    return keras.StatelessScope(state_mapping=_mapping(model, deltas), collect_losses=True)


def keep_state_updates(model, scope) -> None:
    """Assigns the state the perturbed pass updated inside `scope` (batch-norm statistics, seed
    states); nothing for None."""
    if scope is None:
        return
    for variable in model.non_trainable_variables:
        value = scope.get_current_value(variable)
        if value is not None:
            variable.assign(value)
