"""What importing the package does to the process: the oneDNN default (aalp_tf/__init__.py)."""
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
