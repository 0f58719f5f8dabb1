"""The training adversary of every method: PGD-k (the default), FGSM-RS or N-FGSM.

PGD-k costs k input-gradient passes per step; the single-step adversaries cost one, which is
what makes fast adversarial training fast:

- FGSM-RS (Wong et al., "Fast is better than free", 2020): a uniform random start in the
  epsilon-ball, one signed-gradient step of 1.25·epsilon, projected back onto the ball.
- N-FGSM (de Jorge et al., "Make some noise", 2022): noise uniform in 2·epsilon, one step of
  epsilon, and no projection back onto the epsilon-ball (the example may lie up to 3·epsilon
  away); only the image range [0, 1] is enforced. The larger noise, not the clipping, is what
  avoids catastrophic overfitting at large epsilon.

Both are pure functions over attacks.py's helpers, with the paper's constants as keyword
defaults. The random draw comes in as `noise` (uniform in [-epsilon, epsilon]): the trainer
draws it for the global batch, so that N replicas start where one device would, and scales it.

The threat model is L-inf here: `tf.sign` is its steepest-ascent direction and
`attacks.project` / `attacks.clip_to_image` its projections. A threat-model class with
`step(x, grad, size)`, `project(x_adv, x, epsilon)` and `random_perturb` (MadryLab's
attack_steps.py) would replace exactly those three calls, with `noise` drawn by its
`random_perturb`.

Which objective the adversary maximises is the method's (`Method.adversary`): "ce" with the true
labels, or "kl" from the clean prediction (TRADES); `training_objective` builds it.
"""
from typing import Callable

import tensorflow as tf

from aalp_tf import attacks, losses, rules
from aalp_tf.registry import Registry

PGD = "pgd"  # the model's own PGD-k (AdversarialModel.adversarial_examples), the default


def training_objective(kind: str, logits_fn: Callable, images, labels) -> Callable:
    """logits -> [N]: what the adversary maximises, "ce" (true labels) or "kl" (KL from the
    clean prediction, which gets no gradient)."""
    if kind == "kl":
        clean_logits = tf.stop_gradient(logits_fn(images))
        return lambda logits: losses.kl_divergence(clean_logits=clean_logits, adv_logits=logits)
    return attacks.cross_entropy_objective(labels)


def fgsm_rs(logits_fn, x, labels, *, epsilon, noise, objective=None, step=1.25):
    """FGSM from a random start (Wong et al. 2020): x0 = Π(x + noise), then one step of
    `step`·epsilon along sign(∇), projected onto the epsilon-ball and [0, 1].

    Args:
      logits_fn: images -> logits, the model in inference mode.
      x: images in [0, 1], [N, H, W, C].
      labels: true labels [N].
      epsilon: the L-inf radius.
      noise: the random start, [N, H, W, C] uniform in [-epsilon, epsilon].
      objective: logits -> [N] to maximise; default cross-entropy with `labels`.
      step: the step in units of epsilon (the paper's 1.25).
    """
    objective = objective or attacks.cross_entropy_objective(labels)
    start = attacks.project(x + noise, x, epsilon=epsilon)
    grad, _ = attacks.input_gradient(logits_fn, start, objective)
    return tf.stop_gradient(attacks.project(start + step * epsilon * tf.sign(grad), x,
                                            epsilon=epsilon))


def n_fgsm(logits_fn, x, labels, *, epsilon, noise, objective=None, noise_scale=2.0, step=1.0):
    """N-FGSM (de Jorge et al. 2022): x0 = clip(x + noise_scale·noise), then one step of
    `step`·epsilon along sign(∇), clipped to [0, 1] only: no projection onto the epsilon-ball.

    Args: as `fgsm_rs`; `noise_scale` widens the noise to [-2·epsilon, 2·epsilon] (the paper's
    k = 2) and `step` is the paper's alpha = epsilon.
    """
    objective = objective or attacks.cross_entropy_objective(labels)
    start = attacks.clip_to_image(x + noise_scale * noise)
    grad, _ = attacks.input_gradient(logits_fn, start, objective)
    return tf.stop_gradient(attacks.clip_to_image(start + step * epsilon * tf.sign(grad)))


# name -> fn(logits_fn, x, labels, *, epsilon, noise, objective) -> adversarial x
SINGLE_STEP = Registry("single-step adversary")
SINGLE_STEP.add("fgsm_rs", fgsm_rs)
SINGLE_STEP.add("n_fgsm", n_fgsm)


def names() -> list:
    """Every training adversary: what --adversary accepts."""
    return sorted([PGD, *SINGLE_STEP.names()])


def check_adversary(name) -> None:
    """AdversarialModel's `adversary=`, refused in one line (the rule --adversary shares)."""
    with rules.keyword_arguments():
        rules.ADVERSARY.check(name)
