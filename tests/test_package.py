"""What importing the package does to the process (aalp_tf/__init__.py): the oneDNN default, and
the API imported at once, except while Python locates a `python -m aalp_tf.<command>`."""
import os
import platform
import subprocess
import sys

import pytest

PROBE = ("import os, aalp_tf, tensorflow; "
         "from tensorflow.python.util import _pywrap_util_port as port; "
         "print(os.environ['TF_ENABLE_ONEDNN_OPTS'], port.IsMklEnabled())")


def probe(**env):
    environ = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    environ.update(env, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", PROBE], env=environ, capture_output=True,
                         text=True, timeout=120, check=True)
    setting, enabled = out.stdout.split()[-2:]
    return setting, enabled == "True"


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"),
                    reason="TensorFlow's oneDNN switch concerns x86 CPUs")
def test_importing_aalp_tf_first_turns_onednn_on_unless_the_user_said_otherwise():
    assert probe() == ("1", True)
    assert probe(TF_ENABLE_ONEDNN_OPTS="0") == ("0", False)


LOCATING = """
import sys
sys.argv[0] = "-m"  # as while Python locates `python -m aalp_tf.train --help`
sys.orig_argv = [sys.executable, "-m", "aalp_tf.train", "--help"]
import aalp_tf
print("tensorflow" in sys.modules, "evaluate" in vars(aalp_tf))
print(aalp_tf.evaluate.__module__, aalp_tf.AdversarialModel.__module__,
      "tf_saved_model" in aalp_tf.trainer.EXPORT_FORMATS, "tensorflow" in sys.modules)
"""


def test_the_api_waits_while_a_command_is_located_and_arrives_when_asked():
    out = subprocess.run([sys.executable, "-c", LOCATING], capture_output=True, text=True,
                         timeout=120, check=True,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")).stdout.split()
    assert out[-6:] == ["False", "False", "aalp_tf.evaluation.robustness", "aalp_tf.trainer",
                        "True", "True"]


def test_an_ordinary_import_brings_the_api_at_once():
    import aalp_tf
    from aalp_tf.evaluation import robustness
    assert "evaluate" in vars(aalp_tf) and aalp_tf.evaluate is robustness.evaluate_model
