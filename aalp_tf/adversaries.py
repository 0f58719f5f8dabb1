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
defaults. The random draw comes in as `noise` (uniform in [-epsilon, epsilon]): `start_noise`
draws it for the global batch, so that N replicas start where one device would; the caller scales
it (the warm-up).

The threat model is L-inf here: `tf.sign` is its steepest-ascent direction and
`attacks.project` / `attacks.clip_to_image` its projections. A threat-model class with
`step(x, grad, size)`, `project(x_adv, x, epsilon)` and `random_perturb` (MadryLab's
attack_steps.py) would replace exactly those three calls, with `noise` drawn by its
`random_perturb`.

Which objective the adversary maximises is the method's (`Method.adversary`): "ce" with the true
labels, or "kl" from the clean prediction (TRADES); `training_objective` builds it.

`branch_examples` is the model's side: it reads an AdversarialModel's settings (attack_config,
seed, optimizer step, warm-up) and picks the adversary. It takes the model rather than living on
it, so the trainer keeps the Keras model and its step, and this module every adversary.
"""
from typing import Callable

import tensorflow as tf

from aalp_tf import attacks, losses, rules
from aalp_tf.registry import Registry

PGD = "pgd"  # PGD-k (`pgd_examples`), the default


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


# ---- an AdversarialModel's adversary ------------------------------------------------------------


def start_noise(model, images, seed):
    """This replica's slice of a random start drawn for the whole global batch.

    Drawing for the global batch and slicing by replica makes N replicas start exactly where
    one device would on the same global batch (replica r holds the r-th contiguous chunk).
    """
    context = tf.distribute.get_replica_context()
    replicas = context.num_replicas_in_sync if context else 1
    replica = context.replica_id_in_sync_group if context else 0
    local = tf.shape(images)[0]
    shape = tf.concat([[local * replicas], tf.shape(images)[1:]], axis=0)
    threat = attacks.threat_model(model.attack_config.norm)
    noise = threat.random_perturb(shape, epsilon=model.attack_config.epsilon, seed=seed)
    return noise[replica * local:(replica + 1) * local]


def step_seed(model):
    """Stateless seed of this step's random starts: a function of (seed, step) only."""
    step = tf.cast(model.optimizer.iterations, tf.int64)
    return tf.stack([tf.constant(model.seed, tf.int64), step])


def pgd_examples(model, images, labels, *, objective="ce", steps=None, seed=(0, 0), scale=1.0):
    """PGD from a random start with the model in inference mode; no gradient flows back.

    `scale` multiplies epsilon and the step size (the warm-up ramp; 1 outside it).
    """
    if objective == "kl":
        clean_logits = tf.stop_gradient(model(images, training=False))
        target = lambda logits: losses.kl_divergence(clean_logits=clean_logits,
                                                     adv_logits=logits)
    else:
        target = attacks.cross_entropy_objective(labels)
    cfg = model.attack_config
    noise = start_noise(model, images, seed) * scale if cfg.random_start else None
    adv = attacks.pgd(model.inference_logits, images, labels, epsilon=cfg.epsilon * scale,
                      step_size=cfg.step_size * scale, steps=steps or cfg.steps,
                      objective=target, random_start=cfg.random_start, noise=noise,
                      norm=cfg.norm)
    return tf.stop_gradient(adv)


def single_step_examples(model, images, labels):
    """FGSM-RS or N-FGSM on the method's objective, from this step's global-batch noise
    (their random start is part of the method: `random_start` is PGD's)."""
    scale = model.warmup_scale()
    adversary = SINGLE_STEP.get(model.attack_config.adversary)
    target = training_objective(model.method.adversary, model.inference_logits, images, labels)
    return adversary(model.inference_logits, images, labels,
                     epsilon=model.attack_config.epsilon * scale,
                     noise=start_noise(model, images, step_seed(model)) * scale,
                     objective=target)


def branch_examples(model, images, labels):
    """The training step's adversarial branch: the model's adversary on the method's
    objective, at this step's seed and warm-up scale."""
    if model.attack_config.adversary == PGD:
        return pgd_examples(model, images, labels, objective=model.method.adversary,
                            seed=step_seed(model), scale=model.warmup_scale())
    return single_step_examples(model, images, labels)
