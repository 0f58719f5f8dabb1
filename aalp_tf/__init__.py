"""aalp_tf: adversarial training with Adaptive Adversarial Logits Pairing (AALP) in TensorFlow/Keras."""
import os

# TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, when it is imported, and on x86 CPUs without
# AVX-512 VNNI/BF16/AMX leaves its oneDNN kernels off; its other CPU kernels may then be built for
# SSE only. On such a CPU oneDNN made our train steps 1.7-2x faster and PGD 1.8x faster
# (benchmarks/RESULTS.md, question 4b). setdefault: an explicit TF_ENABLE_ONEDNN_OPTS=0 wins, and
# nothing changes when TensorFlow was imported before aalp_tf. It only concerns CPU kernels.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"
