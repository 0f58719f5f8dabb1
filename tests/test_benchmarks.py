"""Every benchmark script's --quick mode runs to its table, so a broken benchmark fails CI
rather than the next person who reruns it. Marked `benchmark`: .ci/run runs these
(`python -m pytest -q -m benchmark`), the default command does not."""
import argparse
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


def test_time_to_robustness_keeps_the_findings_written_by_hand(tmp_path):
    from benchmarks import time_to_robustness as ttr
    out = tmp_path / "time_to_robustness.md"
    args = argparse.Namespace(out=str(out), awp_gamma=5e-3)
    ttr.write_markdown(args, ["a"], [["old"]], "old verdict", "old baseline")
    assert ttr.FINDINGS not in out.read_text()
    out.write_text(out.read_text() + ttr.FINDINGS + "\n\nwritten by hand\n")
    ttr.write_markdown(args, ["a"], [["new"]], "new verdict", "new baseline")
    text = out.read_text()
    assert "| new |" in text and "| old |" not in text and "old verdict" not in text
    assert text.endswith(ttr.FINDINGS + "\n\nwritten by hand\n")
    assert text.count(ttr.FINDINGS) == 1


@pytest.mark.parametrize("name", ["alp-pgd", "aalp-fgsm_rs-awp", "alp-n_fgsm-cyclic",
                                  "trades-pgd-awp-piecewise", "alp-fgsm_rs-13ep",
                                  "aalp-pgd-awp-cyclic-16ep"])
def test_time_to_robustness_names_its_configurations_both_ways(name):
    from benchmarks.time_to_robustness import Config
    config = Config.named(name, 5e-3)
    assert config.name == name
    assert config.awp_gamma == (5e-3 if "-awp" in name else 0.0)
    assert config.epochs == (int(name.rsplit("-", 1)[1][:-2]) if name.endswith("ep") else 0)


def test_time_to_robustness_measures_other_configurations_beside_the_grid(capsys):
    from benchmarks import time_to_robustness as ttr
    args = argparse.Namespace(lr_schedule="constant", awp_gamma=5e-3, only="",
                              also="alp-fgsm_rs-cyclic,alp-pgd")
    names = [c.name for c in ttr.configs(args, ttr.FULL)]
    assert names[-1] == "alp-fgsm_rs-cyclic" and names.count("alp-pgd") == 1
    assert len(names) == 13
    for bad in ("alp", "alp-pgd-fast", "nosuch-pgd", "alp-bim", "alp-pgd-cyclic-x",
                "alp-pgd-0ep", "alp-pgd-ep", "alp-pgd-13ep-cyclic"):
        with pytest.raises(SystemExit) as refused:
            ttr.configs(argparse.Namespace(**{**vars(args), "also": bad}), ttr.FULL)
        assert str(refused.value).startswith(f"error: --also names {bad}; accepted: ")
