"""aalp_tf: adversarial training with Adaptive Adversarial Logits Pairing (AALP) in TensorFlow/Keras."""

__version__ = "0.1.0"
