"""Subprocess for tests/test_distributed.py: one tiny fit under MultiWorkerMirroredStrategy.

usage (TF_CONFIG set by the caller): python multi_worker_fit.py MODEL_DIR WORKAROUND(0|1)
With WORKAROUND=0 the model class' work-around for keras-team/keras#20585 is switched off.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

from aalp_tf import training  # noqa: E402
from aalp_tf.trainer import AdversarialModel  # noqa: E402
from tiny import tiny_arrays, tiny_config  # noqa: E402

AdversarialModel.WORK_AROUND_KERAS_20585 = sys.argv[2] == "1"
cfg = tiny_config(sys.argv[1], "alp", train_args={"strategy": "multi_worker"})
result = training.train(cfg, arrays=tiny_arrays(96, 16), verbose=0, export_model=False)
print("finished", result.history[-1]["loss"])
