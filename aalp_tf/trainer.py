"""The one Keras model class: backbone -> GuidedDropout -> logits, with the one train_step.

`train_step` runs once per replica. It makes the adversarial branch with PGD (model in inference
mode), runs the backbone once per branch in training mode, takes Guided Dropout's contribution
pass through the logits layer only, applies the method's loss, and reduces it by the *global*
batch (the optimizer sums gradients across replicas).
"""
import keras
import tensorflow as tf

from aalp_tf import attacks, losses
from aalp_tf.config import AttackConfig, MethodConfig, RunConfig
from aalp_tf.layers import GuidedDropout, feature_contribution
from aalp_tf.methods import ADV, CLEAN, METHODS
from aalp_tf.models import BACKBONES


class AdversarialModel(keras.Model):
    """A classifier whose features (A_fc) and logits layer are kept apart for Guided Dropout.

    Calling the model returns logits (never probabilities); at inference Guided Dropout is the
    identity, so `model(x)` is what attacks, evaluation and exports see.

    Args:
      backbone: keras.Model, images in [0, 1] -> A_fc [N, F].
      num_classes: size of the logits layer.
      method: MethodConfig naming a registered method.
      attack: the PGD adversary for training and validation.
      keep_fraction, gd_rescale: GuidedDropout's arguments.
      seed: base of the stateless seeds of the adversary's random starts.
      val_attack_steps: PGD steps for validation robust accuracy (0: attack.steps).
      epsilon_warmup_steps: the training adversary's epsilon (and step) ramp up linearly from 0
        over this many optimizer steps (0: off, as in the paper). Counted in steps, which the
        optimizer knows however `fit` is called; `build_model` turns the config's epochs into
        steps.
    """

    def __init__(self, *, backbone, num_classes, method: MethodConfig, attack: AttackConfig,
                 keep_fraction=0.5, gd_rescale=False, seed=0, val_attack_steps=0,
                 epsilon_warmup_steps=0, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.guided_dropout = GuidedDropout(keep_fraction, rescale=gd_rescale,
                                            name="guided_dropout")
        # Logits stay float32 under mixed precision: losses and attacks read them.
        self.classifier = keras.layers.Dense(num_classes, name="logits", dtype="float32")
        self.method_config = method
        self.method = METHODS.get(method.name)
        self.attack_config = attack
        self.use_guided_dropout = self.method.guided_dropout or method.guided_dropout
        self.seed = int(seed)
        self.val_attack_steps = int(val_attack_steps) or attack.steps
        self.epsilon_warmup_steps = int(epsilon_warmup_steps)
        self._train_trackers = {"loss": keras.metrics.Mean(name="loss")}
        if CLEAN in self.method.branches:
            self._train_trackers["clean_accuracy"] = keras.metrics.SparseCategoricalAccuracy(
                name="clean_accuracy")
        if ADV in self.method.branches:
            self._train_trackers["adv_accuracy"] = keras.metrics.SparseCategoricalAccuracy(
                name="adv_accuracy")
        for name in self.method.logs:
            self._train_trackers[name] = keras.metrics.Mean(name=name)
        # Validation logs the clean cross-entropy under its own name: `loss` is the method's
        # loss, which validation does not compute.
        self._val_trackers = {
            "ce_clean": keras.metrics.Mean(name="ce_clean"),
            "clean_accuracy": keras.metrics.SparseCategoricalAccuracy(name="clean_accuracy"),
            "robust_accuracy": keras.metrics.SparseCategoricalAccuracy(name="robust_accuracy"),
        }

    def call(self, images, training=False):
        features = self.backbone(images, training=training)
        return self.logits_from_features(features, training=training)

    def logits_from_features(self, features, *, training=False, contribution=None):
        masked = self.guided_dropout(features, training=training, contribution=contribution)
        return self.classifier(masked)

    def inference_logits(self, images):
        return self(images, training=False)

    @property
    def metrics(self):
        return list(self._train_trackers.values()) + list(self._val_trackers.values())

    # ---- adversary -------------------------------------------------------------------------

    def _start_noise(self, images, seed):
        """This replica's slice of a random start drawn for the whole global batch.

        Drawing for the global batch and slicing by replica makes N replicas start exactly where
        one device would on the same global batch (replica r holds the r-th contiguous chunk).
        """
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync if context else 1
        replica = context.replica_id_in_sync_group if context else 0
        local = tf.shape(images)[0]
        shape = tf.concat([[local * replicas], tf.shape(images)[1:]], axis=0)
        eps = self.attack_config.epsilon
        noise = tf.random.stateless_uniform(shape, seed=seed, minval=-eps, maxval=eps)
        return noise[replica * local:(replica + 1) * local]

    def _step_seed(self):
        """Stateless seed of this step's random starts: a function of (seed, step) only."""
        step = tf.cast(self.optimizer.iterations, tf.int64)
        return tf.stack([tf.constant(self.seed, tf.int64), step])

    def adversarial_examples(self, images, labels, *, objective="ce", steps=None, seed=(0, 0),
                             scale=1.0):
        """PGD from a random start with the model in inference mode; no gradient flows back.

        `scale` multiplies epsilon and the step size (the warm-up ramp; 1 outside it).
        """
        if objective == "kl":
            clean_logits = tf.stop_gradient(self(images, training=False))
            target = lambda logits: losses.kl_divergence(clean_logits=clean_logits,
                                                         adv_logits=logits)
        else:
            target = attacks.cross_entropy_objective(labels)
        cfg = self.attack_config
        noise = self._start_noise(images, seed) * scale if cfg.random_start else None
        adv = attacks.pgd(self.inference_logits, images, labels, epsilon=cfg.epsilon * scale,
                          step_size=cfg.step_size * scale, steps=steps or cfg.steps,
                          objective=target, random_start=cfg.random_start, noise=noise)
        return tf.stop_gradient(adv)

    # ---- training --------------------------------------------------------------------------

    def contribution(self, features, labels):
        """Eq. 7 over every example of the step, all branches pooled; mean across replicas.

        Only the logits layer runs here: the backbone's features are inputs to this pass, so
        its cost is one dense layer forward and backward. The features are watched in float32
        and go straight to the float32 logits layer (Guided Dropout without a contribution is
        the identity, and its float16 autocast would undo the cast): under mixed precision,
        float16 gradients of small products underflow to zero and features tie at the median.
        """
        features = {b: tf.cast(f, tf.float32) for b, f in features.items()}
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(features)
            logits = {b: self.classifier(f) for b, f in features.items()}
            per_example, _ = self.method.loss(logits=logits, labels=labels,
                                              cfg=self.method_config)
            total = tf.reduce_sum(per_example)
        grads = tape.gradient(total, features)
        branches = list(features)
        scores = feature_contribution(gradients=tf.concat([grads[b] for b in branches], 0),
                                      features=tf.concat([features[b] for b in branches], 0))
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            scores = context.all_reduce(tf.distribute.ReduceOp.MEAN, scores)
        return scores

    def warmup_scale(self):
        """Share of epsilon the training adversary uses at this step: a linear ramp from 0 over
        `epsilon_warmup_steps` steps (not in the paper; off by default), then 1."""
        if self.epsilon_warmup_steps <= 0:
            return 1.0
        step = tf.cast(self.optimizer.iterations + 1, tf.float32)
        return tf.minimum(1.0, step / float(self.epsilon_warmup_steps))

    def branch_inputs(self, images, labels):
        inputs = {}
        for branch in self.method.branches:
            if branch == CLEAN:
                inputs[CLEAN] = images
            else:
                inputs[ADV] = self.adversarial_examples(images, labels,
                                                        objective=self.method.adversary,
                                                        seed=self._step_seed(),
                                                        scale=self.warmup_scale())
        return inputs

    def branch_loss(self, features, labels, contribution=None):
        """The method's per-example loss over branch features, masked by Guided Dropout if given."""
        logits = {b: self.logits_from_features(f, training=True, contribution=contribution)
                  for b, f in features.items()}
        per_example, logs = self.method.loss(logits=logits, labels=labels,
                                             cfg=self.method_config)
        return per_example, logits, logs

    def train_step(self, data):
        images, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        # The adversary runs outside the tape: its PGD loop needs no recording.
        inputs = self.branch_inputs(images, labels)
        with tf.GradientTape() as tape:
            features = {b: self.backbone(x, training=True) for b, x in inputs.items()}
            contribution = None
            if self.use_guided_dropout:
                with tape.stop_recording():
                    contribution = self.contribution(features, labels)
            per_example, logits, logs = self.branch_loss(features, labels, contribution)
            # Divide by the global batch: gradients are summed across replicas.
            loss = tf.nn.compute_average_loss(per_example)
            if self.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(self.losses))
            loss = self.optimizer.scale_loss(loss)  # mixed precision: LossScaleOptimizer
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        self._train_trackers["loss"].update_state(per_example)
        if CLEAN in logits:
            self._train_trackers["clean_accuracy"].update_state(labels, logits[CLEAN])
        if ADV in logits:
            self._train_trackers["adv_accuracy"].update_state(labels, logits[ADV])
        for name in self.method.logs:
            self._train_trackers[name].update_state(logs[name])
        return self._results(self._train_trackers)

    def test_step(self, data):
        """Validation: clean accuracy, and robust accuracy under the training PGD (CE, true labels)."""
        images, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        clean_logits = self(images, training=False)
        adv = self.adversarial_examples(images, labels, steps=self.val_attack_steps,
                                        seed=(self.seed + 1, 0))
        adv_logits = self(adv, training=False)
        self._val_trackers["ce_clean"].update_state(
            losses.cross_entropy(logits=clean_logits, labels=labels))
        self._val_trackers["clean_accuracy"].update_state(labels, clean_logits)
        self._val_trackers["robust_accuracy"].update_state(labels, adv_logits)
        return self._results(self._val_trackers)

    # ---- keras-team/keras#20585: model.fit under MultiWorkerMirroredStrategy ----------------
    # With Keras 3.15, fit() under MultiWorkerMirroredStrategy fails twice out of the box:
    # `_maybe_symbolic_build` reduces the first PerReplica batch and cannot, then
    # `reduce_per_replica` reduces every scalar log with axis=0. Our model is built (layers and
    # optimizer) before fit, so there is nothing to build symbolically; and logs are returned
    # with shape [1] under that strategy, which the axis-0 reduction turns back into scalars
    # (every replica holds the same synchronised metric values, so the mean is exact).
    # tests/test_distributed.py fails when either half stops being needed or stops working.
    WORK_AROUND_KERAS_20585 = True

    def _multi_worker(self):
        return self.WORK_AROUND_KERAS_20585 and isinstance(
            self.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._multi_worker() and self.built and self.optimizer.built:
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def _results(self, trackers):
        results = {name: tracker.result() for name, tracker in trackers.items()}
        if self._multi_worker():
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results


def build_model(cfg: RunConfig, spec, *, steps_per_epoch: int = 0) -> AdversarialModel:
    """The model the trainer trains (and the tuner tunes), compiled with Adam.

    Args:
      cfg: the run's config.
      spec: the dataset's DatasetSpec (image shape, classes, normalisation).
      steps_per_epoch: training steps per epoch, which turn the epsilon warm-up's epochs into
        steps; 0 (a model rebuilt for inference, export or analysis) leaves the warm-up off.
    """
    backbone = BACKBONES.get(cfg.model.name)(input_shape=spec.image_shape, mean=spec.mean,
                                             std=spec.std, width=cfg.model.width,
                                             sync_bn=cfg.model.sync_batchnorm)
    model = AdversarialModel(backbone=backbone, num_classes=spec.num_classes, method=cfg.method,
                             attack=cfg.attack, keep_fraction=cfg.model.keep_fraction,
                             gd_rescale=cfg.model.gd_rescale, seed=cfg.train.seed,
                             val_attack_steps=cfg.train.val_attack_steps,
                             epsilon_warmup_steps=round(cfg.attack.warmup_epochs * steps_per_epoch),
                             name=f"{cfg.data.dataset}_{cfg.method.name}")
    model.compile(optimizer=keras.optimizers.Adam(cfg.train.learning_rate),
                  jit_compile=cfg.train.jit_compile)
    model(tf.zeros((1,) + tuple(spec.image_shape)))  # build every layer
    model.optimizer.build(model.trainable_variables)  # so a checkpoint can restore its slots
    return model
