"""The one Keras model class: backbone -> GuidedDropout -> logits, with the one train_step.

`AdversarialModel` is the public API (`aalp_tf.AdversarialModel`): any Keras backbone, plain
keyword arguments, Keras' own compile/fit/save/load_model and callbacks. `build_model` turns a
RunConfig into those keyword arguments, so the commands build their models the same way.

`train_step` runs once per replica. It makes the adversarial branch with PGD (model in inference
mode), runs the backbone once per branch in training mode, takes Guided Dropout's contribution
pass through the logits layer only, applies the method's loss, and reduces it by the *global*
batch (the optimizer sums gradients across replicas).

The model reads; two modules beside it do the rest: model_inputs.py checks what the Python API
is given (arguments, backbone, batches), adversaries.py makes the adversarial branch from the
model's settings.
"""
import keras
import tensorflow as tf

from aalp_tf import adversaries, awp, distribution, losses, model_inputs, schedules, signatures
from aalp_tf.config import AttackConfig, MethodConfig, RunConfig
from aalp_tf.errors import invalid_argument
from aalp_tf.layers import GuidedDropout, feature_contribution
from aalp_tf.methods import ADV, CLEAN, METHODS
from aalp_tf.model_inputs import check_features
from aalp_tf.models import build_backbone


@keras.saving.register_keras_serializable(package="aalp_tf")
class AdversarialModel(distribution.MultiWorkerFit, keras.Model):
    """A classifier trained adversarially, whose features (A_fc) and logits layer are kept apart
    for Guided Dropout.

    Calling the model returns logits (never probabilities); at inference Guided Dropout is the
    identity, so `model(x)` is what attacks, evaluation and exports see. `fit` takes (images,
    integer labels[, sample weights]) with float images in [0, 1]; compile it with an optimizer
    alone (the loss is the method's). Validation logs `val_clean_accuracy`,
    `val_robust_accuracy` (PGD with the training adversary's settings) and `val_ce_clean`.

    Args:
      backbone: a keras.Model (functional, Sequential or subclassed): images in [0, 1] ->
        features A_fc [N, F].
      num_classes: size of the logits layer.
      epsilon, step_size, attack_steps: the L-inf PGD adversary of training and validation,
        in pixel units of images in [0, 1] (they depend on the dataset: no default).
      method: a registered method: natural, madry, alp, trades, aalp_sw, aalp_gd, aalp (the
        paper's), or one added with `aalp_tf.register_method`.
      alpha: weight of the (adaptive) ALP term, Eq. 10.
      trades_beta: TRADES' weight of the KL term.
      guided_dropout: add Guided Dropout to any method (aalp_gd and aalp have it anyway).
      keep_fraction, gd_rescale: GuidedDropout's arguments (0.5: the paper's median rule).
      random_start: PGD starts from a uniform random point of the epsilon-ball.
      seed: base of the stateless seeds of the adversary's random starts.
      val_attack_steps: PGD steps for validation robust accuracy (0: attack_steps).
      epsilon_warmup_steps: the training adversary's epsilon (and step) ramp up linearly from 0
        over this many optimizer steps (0: off, as in the paper). Counted in steps, which the
        optimizer knows however `fit` is called; `build_model` turns the config's epochs into
        steps.
      adversary: the training adversary: "pgd" (PGD-k, above), "fgsm_rs" or "n_fgsm" (one
        input gradient per step, aalp_tf/adversaries.py); validation always uses PGD.
      awp_gamma: adversarial weight perturbation's size relative to each weight's norm
        (aalp_tf/awp.py; 0: off).
      norm: the threat model of the training and validation adversary, "linf" or "l2"
        (attacks.THREAT_MODELS); epsilon and step_size are in its units.
    """

    def __init__(self, backbone, num_classes, *, epsilon, step_size, attack_steps,
                 method="aalp", alpha=1.0, trades_beta=6.0, guided_dropout=False,
                 keep_fraction=0.5, gd_rescale=False, random_start=True, seed=0,
                 val_attack_steps=0, epsilon_warmup_steps=0, adversary=adversaries.PGD,
                 awp_gamma=0.0, norm="linf", **kwargs):
        if not isinstance(backbone, keras.layers.Layer):
            raise TypeError(f"Invalid value received for argument `backbone`. Expected a "
                            "keras.Model mapping images in [0, 1] to features [N, F]. "
                            f"Received: backbone of type {type(backbone).__name__}")
        model_inputs.check_arguments(num_classes=num_classes, method=method, epsilon=epsilon,
                        step_size=step_size, attack_steps=attack_steps, alpha=alpha,
                        trades_beta=trades_beta, seed=seed, val_attack_steps=val_attack_steps,
                        epsilon_warmup_steps=epsilon_warmup_steps, norm=norm,
                        adversary=adversary)
        awp.check_gamma(awp_gamma)
        # The two mistakes Keras trains through silently: a classifier passed as the backbone
        # (a second logits layer on its output) and channels-first images.
        model_inputs.check_head(backbone, num_classes)
        model_inputs.check_channels_last(backbone)
        known = model_inputs.static_output_shape(backbone)
        if known is not None:
            check_features(backbone, known)
        super().__init__(**kwargs)
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.guided_dropout = GuidedDropout(keep_fraction, rescale=gd_rescale,
                                            name="guided_dropout")
        # Logits stay float32 under mixed precision: losses and attacks read them.
        self.classifier = keras.layers.Dense(num_classes, name="logits", dtype="float32")
        self.method_config = MethodConfig(name=method, alpha=float(alpha),
                                          trades_beta=float(trades_beta),
                                          guided_dropout=bool(guided_dropout))
        self.method = METHODS.get(method)
        self.attack_config = AttackConfig(epsilon=float(epsilon), step_size=float(step_size),
                                          steps=int(attack_steps),
                                          random_start=bool(random_start),
                                          adversary=adversary, norm=norm)
        self.use_guided_dropout = self.method.guided_dropout or bool(guided_dropout)
        self.seed = int(seed)
        self.val_attack_steps = int(val_attack_steps) or int(attack_steps)
        self.epsilon_warmup_steps = int(epsilon_warmup_steps)
        self.awp_gamma = float(awp_gamma)
        # The RunConfig this model was built from (build_model), which its exports keep for
        # analysis; None for a model built by hand.
        self.run_config = None
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
        if known is not None:  # a backbone with an Input: built now, as functional models are
            self.build(backbone.inputs[0].shape)

    # ---- Keras: build, config, compile, export ---------------------------------------------

    def build(self, input_shape):
        """Builds the backbone (a subclassed one learns its shapes here), then the layers
        behind it; `keras.models.load_model` calls this before it loads the weights."""
        if self.classifier.built:  # built at construction (a backbone with an Input)
            return
        model_inputs.check_images_channels_last(input_shape)
        # A symbolic call builds any backbone, even one without build or compute_output_shape.
        features = tuple(self.backbone(keras.KerasTensor(tuple(input_shape))).shape)
        check_features(self.backbone, features)
        self.guided_dropout.build(features)
        self.classifier.build(features)

    def get_config(self):
        m, a = self.method_config, self.attack_config
        return {**super().get_config(),
                "backbone": keras.saving.serialize_keras_object(self.backbone),
                "num_classes": self.num_classes, "method": m.name, "epsilon": a.epsilon,
                "step_size": a.step_size, "attack_steps": a.steps, "alpha": m.alpha,
                "trades_beta": m.trades_beta, "guided_dropout": m.guided_dropout,
                "keep_fraction": self.guided_dropout.keep_fraction,
                "gd_rescale": self.guided_dropout.rescale, "random_start": a.random_start,
                "seed": self.seed, "val_attack_steps": self.val_attack_steps,
                "epsilon_warmup_steps": self.epsilon_warmup_steps,
                "adversary": a.adversary, "awp_gamma": self.awp_gamma, "norm": a.norm}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        backbone = keras.saving.deserialize_keras_object(config.pop("backbone"),
                                                         custom_objects=custom_objects)
        return cls(backbone, **config)

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        """Keras' compile with an optimizer: the loss and the logged metrics are the method's,
        so a `loss` or `metrics` given here would be silently unused and is refused."""
        for name, value in (("loss", loss), ("metrics", metrics),
                            ("loss_weights", kwargs.get("loss_weights")),
                            ("weighted_metrics", kwargs.get("weighted_metrics"))):
            if value is not None:
                raise invalid_argument(
                    name, "None: AdversarialModel trains with its method's loss and logs its "
                    "own metrics (choose the method with `method=`)", f"{name}={value!r}")
        super().compile(optimizer=optimizer, **kwargs)

    def fit(self, *args, **kwargs):
        with model_inputs.retraced_after_a_refusal(self):
            return super().fit(*args, **kwargs)

    def evaluate(self, *args, **kwargs):
        with model_inputs.retraced_after_a_refusal(self):
            return super().evaluate(*args, **kwargs)

    def compile_from_config(self, config):
        # Keras' own skips a compile it did not write (with a warning): load_model would give
        # back a model without its optimizer and its state.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None,
               **kwargs):
        """Writes the SavedModel `python -m aalp_tf.train` exports at `filepath`, a folder that
        does not exist yet: `serving_default` (float32 images in [0, 1]) and `predict_uint8`,
        with their shape and pixel guards, the model's RunConfig when it was built from one,
        no optimizer state (aalp_tf.signatures); returns the path. TF Serving's versions and
        warm-up records: aalp_tf.serving.saved_model.export_model. Other formats go to Keras'
        own export."""
        if format != "tf_saved_model":
            return super().export(filepath, format=format, verbose=verbose,
                                  input_signature=input_signature, **kwargs)
        if input_signature is not None:
            raise invalid_argument("input_signature", "None: the signatures take images [N, "
                                   "H, W, C] of the shape the model was built with",
                                   f"input_signature={input_signature!r}")
        for name, value in kwargs.items():
            raise invalid_argument(name, "no other argument for format=\"tf_saved_model\"",
                                   f"{name}={value!r}")
        config = self.run_config.to_json() if self.run_config is not None else None
        path = signatures.write(self, filepath, image_shape=self.image_shape, config_json=config)
        if verbose:
            print(f"exported SavedModel: {path}")
        return path

    @property
    def image_shape(self) -> tuple:
        """(H, W, C) of the images the model was built for."""
        if not self.built:
            raise ValueError(f"model {self.name!r} is not built yet: call it on a batch, fit "
                             "it, or build it with model.build((None, H, W, C))")
        return tuple(self.get_build_config()["input_shape"][1:])

    # ---- forward ---------------------------------------------------------------------------

    def features(self, images, training=False):
        """A_fc, the backbone's [N, F] output."""
        features = self.backbone(images, training=training)
        check_features(self.backbone, tuple(features.shape))
        return features

    def call(self, images, training=False):
        return self.logits_from_features(self.features(images, training=training),
                                         training=training)

    def logits_from_features(self, features, *, training=False, contribution=None):
        masked = self.guided_dropout(features, training=training, contribution=contribution)
        return self.classifier(masked)

    def inference_logits(self, images):
        return self(images, training=False)

    @property
    def metrics(self):
        return list(self._train_trackers.values()) + list(self._val_trackers.values())

    # ---- training --------------------------------------------------------------------------

    def contribution(self, features, labels, sample_weight=None):
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
            if sample_weight is not None:  # the loss the step minimises is the weighted one
                per_example = per_example * sample_weight
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
        """The step's input per branch: the images, and the adversary's (adversaries.py)."""
        return {b: images if b == CLEAN else adversaries.branch_examples(self, images, labels)
                for b in self.method.branches}

    def branch_loss(self, features, labels, contribution=None):
        """The method's per-example loss over branch features, masked by Guided Dropout if given."""
        logits = {b: self.logits_from_features(f, training=True, contribution=contribution)
                  for b, f in features.items()}
        per_example, logs = self.method.loss(logits=logits, labels=labels,
                                             cfg=self.method_config)
        return per_example, logits, logs

    def method_loss(self, inputs, labels, weights, tape):
        """(per-example loss, branch logits, logs, the scaled loss to differentiate) of the
        method on the branch inputs, computed under `tape`."""
        features = {b: self.features(x, training=True) for b, x in inputs.items()}
        contribution = None
        if self.use_guided_dropout:
            with tape.stop_recording():
                contribution = self.contribution(features, labels, weights)
        per_example, logits, logs = self.branch_loss(features, labels, contribution)
        # Divide by the global batch: gradients are summed across replicas. Sample weights
        # scale each example's loss, as Keras' own losses do.
        loss = tf.nn.compute_average_loss(per_example, sample_weight=weights)
        if self.losses:
            loss += tf.nn.scale_regularization_loss(tf.add_n(self.losses))
        loss = self.optimizer.scale_loss(loss)  # mixed precision: LossScaleOptimizer
        return per_example, logits, logs, loss

    def train_step(self, data):
        images, labels, weights = model_inputs.unpack(data, self.num_classes)
        # The adversary runs outside the tape: its PGD loop needs no recording.
        inputs = self.branch_inputs(images, labels)
        # AWP: one more forward and backward pass finds the weight perturbation v; the step's
        # gradient is taken at w + v and applied to w (aalp_tf/awp.py).
        deltas = awp.ascent(self, inputs, labels, weights, gamma=self.awp_gamma) \
            if self.awp_gamma else None
        with tf.GradientTape() as tape:
            with awp.perturbed(self, deltas) as scope:
                per_example, logits, logs, loss = self.method_loss(inputs, labels, weights, tape)
        grads = tape.gradient(loss, self.trainable_variables)
        awp.keep_state_updates(self, scope)
        self.optimizer.apply(grads, self.trainable_variables)
        self._train_trackers["loss"].update_state(per_example, sample_weight=weights)
        if CLEAN in logits:
            self._train_trackers["clean_accuracy"].update_state(labels, logits[CLEAN],
                                                                sample_weight=weights)
        if ADV in logits:
            self._train_trackers["adv_accuracy"].update_state(labels, logits[ADV],
                                                              sample_weight=weights)
        for name in self.method.logs:
            self._train_trackers[name].update_state(logs[name], sample_weight=weights)
        return self.logs_of(self._train_trackers)

    def test_step(self, data):
        """Validation: clean accuracy, and robust accuracy under the training PGD (CE, true labels)."""
        images, labels, weights = model_inputs.unpack(data, self.num_classes)
        clean_logits = self(images, training=False)
        adv = adversaries.pgd_examples(self, images, labels, steps=self.val_attack_steps,
                                       seed=(self.seed + 1, 0))
        adv_logits = self(adv, training=False)
        self._val_trackers["ce_clean"].update_state(
            losses.cross_entropy(logits=clean_logits, labels=labels), sample_weight=weights)
        self._val_trackers["clean_accuracy"].update_state(labels, clean_logits,
                                                          sample_weight=weights)
        self._val_trackers["robust_accuracy"].update_state(labels, adv_logits,
                                                           sample_weight=weights)
        return self.logs_of(self._val_trackers)


def model_arguments(cfg: RunConfig, *, steps_per_epoch: int = 0) -> dict:
    """The AdversarialModel keyword arguments a RunConfig means (all but backbone and
    num_classes): the one translation from flags to a model.

    Args:
      cfg: the run's config.
      steps_per_epoch: training steps per epoch, which turn the epsilon warm-up's epochs into
        steps; 0 (a model rebuilt for inference, export or analysis) leaves the warm-up off.
    """
    m, a = cfg.method, cfg.attack
    return dict(method=m.name, alpha=m.alpha, trades_beta=m.trades_beta,
                guided_dropout=m.guided_dropout, epsilon=a.epsilon, step_size=a.step_size,
                attack_steps=a.steps, random_start=a.random_start,
                keep_fraction=cfg.model.keep_fraction, gd_rescale=cfg.model.gd_rescale,
                seed=cfg.train.seed, val_attack_steps=cfg.train.val_attack_steps,
                epsilon_warmup_steps=round(a.warmup_epochs * steps_per_epoch),
                adversary=a.adversary, awp_gamma=cfg.train.awp_gamma, norm=a.norm)


def build_model(cfg: RunConfig, spec, *, steps_per_epoch: int = 0) -> AdversarialModel:
    """The model the trainer trains (and the tuner tunes), compiled with Adam and built.

    Args:
      cfg: the run's config.
      spec: the dataset's DatasetSpec (image shape, classes, normalisation).
      steps_per_epoch: see `model_arguments`.
    """
    m = cfg.model
    backbone = build_backbone(m.name, input_shape=spec.image_shape, mean=spec.mean,
                              std=spec.std, width=m.width, sync_bn=m.sync_batchnorm,
                              depth=m.depth, widen_factor=m.widen_factor)
    model = AdversarialModel(backbone, spec.num_classes,
                             name=f"{cfg.data.dataset}_{cfg.method.name}",
                             **model_arguments(cfg, steps_per_epoch=steps_per_epoch))
    model.run_config = cfg
    model.compile(optimizer=keras.optimizers.Adam(schedules.learning_rate(
                      cfg.train, steps_per_epoch=steps_per_epoch)),
                  jit_compile=cfg.train.jit_compile)
    model.build((None, *spec.image_shape))
    model.optimizer.build(model.trainable_variables)  # so a checkpoint can restore its slots
    return model
