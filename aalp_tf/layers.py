"""GuidedDropout: the paper's feature mask in front of the logits layer (Eq. 7-8)."""
import math

import keras
import tensorflow as tf

from aalp_tf import rules


def feature_contribution(*, gradients, features):
    """Eq. 7: R = mean over the batch of |dLoss/dA_fc * A_fc|, one score per feature.

    Args:
      gradients: dLoss/dA_fc, [N, F].
      features: A_fc, [N, F].

    Returns:
      [F] float tensor, no gradient.
    """
    # float32 even under mixed precision: the median compares small products.
    product = tf.cast(gradients, tf.float32) * tf.cast(features, tf.float32)
    return tf.stop_gradient(tf.reduce_mean(tf.abs(product), axis=0))


@keras.saving.register_keras_serializable(package="aalp_tf")
class GuidedDropout(keras.layers.Layer):
    """Keeps the features whose contribution R is at least the median, drops the rest (Eq. 8).

    In training, the train step computes the contribution vector R (Eq. 7) with a gradient
    pass over this layer's input and calls the layer with it; the same mask then applies to
    every example of the step (clean and adversarial branch alike). Without a contribution,
    and always at inference, the layer is the identity: no training-time randomness or masking
    reaches evaluation or an exported model.

    Keep rule: with F features and k = ceil(keep_fraction * F), a feature is kept when
    R >= the k-th largest value of R. At keep_fraction=0.5 this is exactly "R >= median(R)"
    (for even F the median lies between the two middle values, so the top F/2 are kept; for
    odd F the middle value itself is kept). Ties at the threshold are all kept, as "≥" says.

    Rescaling: the paper uses the 0/1 comparison itself as the mask, so by default kept
    features are *not* rescaled (`rescale=False`). With `rescale=True` they are multiplied
    by 1/keep_fraction, as inverted dropout does, which keeps the expected logit scale
    between training and inference when dropped features carry a large share of the logits.

    Args:
      keep_fraction: share of features kept, in (0, 1]; 0.5 is the paper's median rule.
      rescale: multiply kept features by 1/keep_fraction.
    """

    def __init__(self, keep_fraction=0.5, rescale=False, **kwargs):
        super().__init__(**kwargs)
        with rules.keyword_arguments():  # --keep_fraction's rule, in the same words
            rules.KEEP_FRACTION.check(keep_fraction)
        self.keep_fraction = float(keep_fraction)
        self.rescale = bool(rescale)
        self.supports_masking = True

    def keep_mask(self, contribution):
        """Eq. 8 as a float 0/1 vector over the features (scaled by 1/keep when rescaling)."""
        contribution = tf.convert_to_tensor(contribution)
        num_features = contribution.shape[-1]
        if num_features is None:
            raise ValueError("GuidedDropout needs a known number of features")
        k = max(1, math.ceil(self.keep_fraction * num_features))
        threshold = tf.math.top_k(contribution, k=k, sorted=True).values[-1]
        mask = tf.cast(contribution >= threshold, self.compute_dtype)
        if self.rescale:
            mask = mask / tf.cast(self.keep_fraction, self.compute_dtype)
        return tf.stop_gradient(mask)

    def call(self, inputs, training=False, contribution=None):
        if not training or contribution is None:
            return inputs
        return inputs * self.keep_mask(contribution)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"keep_fraction": self.keep_fraction, "rescale": self.rescale})
        return config
