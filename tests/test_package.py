"""What importing the package does to the process (aalp_tf/__init__.py): the oneDNN default, the
API at once, and TensorFlow's load notices held back, tested against TensorFlow's real output."""
import os
import platform
import subprocess
import sys

import pytest

PROBE = ("import os, aalp_tf, tensorflow; "
         "from tensorflow.python.util import _pywrap_util_port as port; "
         "print(os.environ['TF_ENABLE_ONEDNN_OPTS'], port.IsMklEnabled())")


def python(code: str, **env) -> subprocess.CompletedProcess:
    """`python -c code` with TensorFlow's logging as a user has it (TF_CPP_MIN_LOG_LEVEL unset)."""
    environ = {k: v for k, v in os.environ.items()
               if k not in ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL")}
    return subprocess.run([sys.executable, "-c", code], env=dict(environ, **env),
                          capture_output=True, text=True, timeout=180, check=True)


def probe(**env):
    setting, enabled = python(PROBE, TF_CPP_MIN_LOG_LEVEL="3", **env).stdout.split()[-2:]
    return setting, enabled == "True"


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"),
                    reason="TensorFlow's oneDNN switch concerns x86 CPUs")
def test_importing_aalp_tf_first_turns_onednn_on_unless_the_user_said_otherwise():
    assert probe() == ("1", True)
    assert probe(TF_ENABLE_ONEDNN_OPTS="0") == ("0", False)


def test_an_import_brings_the_api_at_once():
    import aalp_tf
    from aalp_tf.evaluation import robustness
    assert {"AdversarialModel", "evaluate_model", "GuidedDropout", "register_method",
            "BACKBONES"} <= set(vars(aalp_tf))
    assert aalp_tf.evaluate_model is robustness.evaluate_model
    assert not hasattr(aalp_tf, "__getattr__")  # eager, one way


# TensorFlow's own start-up, as aalp_tf sets it up (oneDNN on, C++ INFO and WARNING logging off)
# but without aalp_tf: what it prints anyway.
TENSORFLOW_ALONE = ("import tensorflow as tf; tf.config.list_physical_devices('GPU'); "
                    "print('done')")
GENUINE = "E0000 00:00:17.9 27660 kernel.cc:10] Resource exhausted: OOM"
# aalp_tf's import, then TensorFlow's real notices (argv[1]) and a genuine error written inside
# the same block: only the error may come out.
REPLAYED = f"""
import os, sys
import aalp_tf
with aalp_tf._without_load_notices():
    os.write(2, sys.argv[1].encode())
    os.write(2, b"{GENUINE}\\n")
print("done")
"""


def test_tensorflows_real_load_notices_are_held_back_and_a_real_error_is_not():
    notices = python(TENSORFLOW_ALONE, TF_ENABLE_ONEDNN_OPTS="1", TF_CPP_MIN_LOG_LEVEL="2").stderr
    if not notices.strip():
        pytest.skip("this TensorFlow prints nothing while it loads: nothing to hold back")
    assert python("import aalp_tf; print('done')").stderr == ""
    replayed = subprocess.run([sys.executable, "-c", REPLAYED, notices], capture_output=True,
                              text=True, timeout=180, check=True,
                              env={k: v for k, v in os.environ.items()
                                   if k != "TF_CPP_MIN_LOG_LEVEL"})
    assert replayed.stderr == GENUINE + "\n", notices



def test_the_package_is_licensed_and_says_so_in_its_metadata(monkeypatch):
    """Many organisations cannot use unlicensed code: the LICENSE file, and setup.py's license
    and license_files, which pip shows and ships (setup.py run with setuptools.setup recording
    what it is given)."""
    import pathlib
    import runpy

    import setuptools

    repo = pathlib.Path(__file__).resolve().parents[1]
    text = (repo / "LICENSE").read_text()
    assert text.startswith("MIT License\n\nCopyright (c) ")
    assert "Permission is hereby granted, free of charge, to any person" in text
    given = {}
    monkeypatch.setattr(setuptools, "setup", given.update)
    runpy.run_path(str(repo / "setup.py"))
    assert (given["license"], given["license_files"]) == ("MIT", ["LICENSE"])
