"""Every benchmark script's --quick mode runs to its table, so a broken benchmark fails CI
rather than the next person who reruns it. Marked `benchmark`: .ci/run runs these
(`python -m pytest -q -m benchmark`), the default command does not."""
import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = sorted(
    ".".join(path.relative_to(REPO).with_suffix("").parts)
    for path in [*REPO.glob("benchmarks/*.py"), *REPO.glob("benchmarks/investigations/*.py")]
    if "harness.parser(" in path.read_text())
# scripts that compare with other packages, absent from the default install: module -> them
NEEDS = {"benchmarks.autoattack_agreement": ("torch", "pyautoattack")}  # the [crosscheck] extra


def test_every_timing_script_is_found():
    assert "benchmarks.train_step_cost" in SCRIPTS
    assert "benchmarks.investigations.onednn" in SCRIPTS
    assert "benchmarks.time_to_robustness" in SCRIPTS
    assert len(SCRIPTS) >= 8


@pytest.mark.benchmark
@pytest.mark.parametrize("module", SCRIPTS)
def test_quick_mode_runs_to_its_table(module):
    absent = [name for name in NEEDS.get(module, ()) if importlib.util.find_spec(name) is None]
    if absent:
        pytest.skip(f"{module} needs {', '.join(absent)} (pip install -e \".[crosscheck]\")")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-m", module, "--quick"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "\n|" in result.stdout, result.stdout[-2000:]  # a markdown table was printed
