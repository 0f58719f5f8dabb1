"""compare: the settings a study keeps, and the command on tiny data.

The study tests (marked slow: their fixture trains 4 cells in subprocesses, about a minute on
2 cores) share one tiny 2-method x 2-seed study, built as the job-array route builds it: two
workers run cells 0 and 1 at once, then a plain run finishes the rest and writes the outputs.
They run in file order: the first ones read the study, the later ones change it (a rerun, a
refused rerun, a cell cut short, more seeds). Runs that train nothing run in this process.
"""
import json
import pathlib
import re
import shutil

import matplotlib.image
import pytest

from aalp_tf.config import differences
from aalp_tf.comparison import cells as cell_files
from aalp_tf.comparison import config as comparison_config
from aalp_tf.comparison import report, statistics
from aalp_tf.comparison.config import CompareConfig
from aalp_tf.errors import UsageError
from aalp_tf.methods import METHODS
from tests.helpers import commands
from tests.helpers.commands import Subprocesses, assert_one_line_error, command
from tests.helpers.dataset_files import write_mnist_files
from tests.helpers.full_disk import full_at, temporaries
from tests.helpers.tiny import tiny_arrays, tiny_config

# ---- config and settings --------------------------------------------------------------------


def compare_config(tmp_path, **changes) -> CompareConfig:
    fields = dict(run=tiny_config(tmp_path / "unused"), methods=("alp", "madry"), seeds=(0, 1),
                  baseline="alp", attacks=("clean", "pgd3", "apgd-ce5"), out=str(tmp_path / "out"),
                  work_dir=str(tmp_path / "work"), eval_step_size=0.01, test_examples=32,
                  attack_examples=(("apgd-ce5", 16),))
    fields.update(changes)
    return CompareConfig(**fields)


@pytest.mark.parametrize("changes,message", [
    ({"seeds": (0, 0)}, "--seeds names 0 more than once; accepted: distinct values"),
    ({"cell": 4}, "--cell=4 is not a cell of this study; accepted: 0..3 (see --list_cells)"),
    ({"cell": 0, "list_cells": True},
     "--list_cells lists every cell and runs none; received it with --cell=0"),
    ({"eval_step_size": 0.0}, "--eval_step_size must be in (0, 1]; received: 0.0"),
    ({"attack_examples": (("apgd-ce5", 16), ("apgd-ce5", 8))},
     "--attack_examples names apgd-ce5 more than once; accepted: distinct values"),
])
def test_validation_messages(tmp_path, changes, message):
    with pytest.raises(UsageError) as err:
        comparison_config.validate_compare(compare_config(tmp_path, **changes),
                                           known_methods=METHODS.names())
    assert str(err.value) == message


def test_parsing_seeds_and_attack_examples():
    assert comparison_config.parse_seeds(["0", " 2", "11"]) == (0, 2, 11)
    assert comparison_config.parse_attack_examples(["AutoAttack1000:1000"]) == (
        ("autoattack1000", 1000),)
    with pytest.raises(UsageError, match=r"^--attack_examples items must be NAME:N with N >= 1 "
                                         r"\(e.g. autoattack1000:1000\); received: 'pgd3'$"):
        comparison_config.parse_attack_examples(["pgd3"])


def test_plan_is_method_major_and_groups_put_the_most_images_first(tmp_path):
    cfg = compare_config(tmp_path)
    assert [(c.index, c.name) for c in cell_files.plan(cfg)] == [
        (0, "alp-seed0"), (1, "alp-seed1"), (2, "madry-seed0"), (3, "madry-seed1")]
    examples = comparison_config.examples_per_attack(cfg, 32)
    assert examples == {"clean": 32, "pgd3": 32, "apgd-ce5": 16}
    assert comparison_config.evaluation_groups(examples) == [(32, ["clean", "pgd3"]),
                                                             (16, ["apgd-ce5"])]
    run = comparison_config.cell_run_config(cfg, "madry", 1)
    assert (run.method.name, run.train.seed, run.data.test_examples) == ("madry", 1, 0)
    assert run.train.model_dir == str(tmp_path / "work" / "madry-seed1" / "run")
    assert run.train.export_dir == str(tmp_path / "work" / "madry-seed1" / "export")


def test_a_cell_from_older_code_is_read_with_defaults_for_what_it_lacks(tmp_path):
    """The running study's cells: a config without newer fields, evaluation without checks."""
    cfg = compare_config(tmp_path)
    settings = comparison_config.study_settings(cfg, {"clean": 32, "pgd3": 32, "apgd-ce5": 16})
    old = json.loads(comparison_config.cell_run_config(cfg, "alp", 2).to_json())
    del old["model"]["sync_batchnorm"], old["train"]["mixed_precision"]
    old["data"].update(source_dir="/elsewhere/mnist", test_examples=0)
    old["train"]["removed_since"] = 7  # a field this code no longer has
    record = {"cell": "alp-seed2", "method": "alp", "seed": 2, "config": old,
              "evaluation": {"examples": {"clean": 32, "pgd3": 32, "apgd-ce5": 16},
                             "epsilon": 0.3, "step_size": 0.01, "restarts": 1, "seed": 0}}
    assert differences(comparison_config.cell_settings(record), settings) == []
    old["model"]["sync_batchnorm"] = True
    record["evaluation"]["step_size"] = 0.02
    assert differences(comparison_config.cell_settings(record), settings) == [
        "training.model.sync_batchnorm: True -> False", "evaluation.step_size: 0.02 -> 0.01"]


def test_the_committed_study_cells_are_adopted_by_their_settings():
    """benchmarks/results/mnist_seeds: every finished cell (written before --export_epoch and
    other fields existed) has the study's settings, so a rerun of the study adopts them."""
    study = pathlib.Path(__file__).resolve().parents[1] / "benchmarks/results/mnist_seeds"
    stored = json.loads((study / cell_files.SETTINGS).read_text())
    settings = comparison_config.stored_settings(stored)  # fields added since: the old values
    assert settings["training"]["attack"]["norm"] == "linf" and "norm" not in stored["training"][
        "attack"]
    records = sorted((study / "cells").glob("*.json"))
    assert len(records) >= 12
    for path in records:
        record = json.loads(path.read_text())
        assert differences(comparison_config.cell_settings(record), settings) == [], path.name
    # The adoption is a comparison that can fail: another budget is a difference.
    record["config"]["train"]["epochs"] += 1
    assert differences(comparison_config.cell_settings(record), settings) == [
        f"training.train.epochs: {record['config']['train']['epochs']} -> "
        f"{settings['training']['train']['epochs']}"]


def test_a_running_cell_is_locked_until_it_ends(tmp_path):
    cfg = compare_config(tmp_path)
    cell = cell_files.plan(cfg)[2]
    with cell_files.locked(cfg, cell):
        with pytest.raises(cell_files.CellBusy, match="^madry-seed0$"):
            with cell_files.locked(cfg, cell):
                pass
        with cell_files.locked(cfg, cell_files.plan(cfg)[3]):  # another cell is free
            pass
    with cell_files.locked(cfg, cell):  # released
        pass


def fake_record(method, seed, clean, pgd):
    return {"cell": f"{method}-seed{seed}", "method": method, "seed": seed,
            "evaluation": {"examples": {"clean": 32, "pgd3": 32}, "epsilon": 0.3,
                           "step_size": 0.01, "restarts": 1, "seed": 0},
            "accuracy": {"clean": clean, "pgd3": pgd}, "checks_failed": [],
            "seconds": {"train": 60.0, "evaluate": 30.0, "total": 90.0}}


def test_summary_with_one_seed_says_n_a(tmp_path):
    cfg = compare_config(tmp_path, seeds=(0,), attacks=("clean", "pgd3"), attack_examples=())
    records = [fake_record("alp", 0, 0.95, 0.80), fake_record("madry", 0, 0.97, 0.75)]
    text = report.summary(cfg, cell_files.plan(cfg), records)
    assert "| clean | alp | 1 | 95.00 | n/a | n/a |" in text
    assert "| pgd3 | madry | 1 | -5.00 | n/a | n/a | n/a |" in text
    assert "| pgd3 | madry | 1 | -5.00 | n/a | n/a | n/a | n/a |" in text  # nor detectable
    assert "t values: none (one seed)." in text
    assert "Evaluation: epsilon 0.3, PGD/CW step 0.01, 1 restart(s), seed 0; clean, pgd3 on " \
           "the first 32 test images." in text


def test_summary_gives_the_difference_three_seeds_could_detect(tmp_path):
    cfg = compare_config(tmp_path, seeds=(0, 1, 2), attacks=("clean", "pgd3"),
                         attack_examples=())
    records = [fake_record("alp", s, 0.95, 0.80) for s in range(3)]
    records += [fake_record("madry", s, 0.95, p) for s, p in enumerate((0.82, 0.825, 0.83))]
    text = report.summary(cfg, cell_files.plan(cfg), records)
    # differences 2.0, 2.5, 3.0 points: SD 0.5; at n = 3, 80% power needs 3.264 SDs
    assert "| pgd3 | madry | 3 | +2.50 | 0.50 | [1.26, 3.74] | yes, above 0 | 1.63 |" in text


# ---- the command on tiny data ---------------------------------------------------------------

TINY = ["--dataset=mnist", "--train_examples=128", "--val_examples=32", "--batch_size=64",
        "--width=4", "--attack_steps=2", "--val_attack_steps=2", "--learning_rate=1e-3",
        "--epochs=2", "--attacks=clean,pgd3,apgd-ce5", "--test_examples=32",
        "--attack_examples=apgd-ce5:16", "--check_examples=8"]
NAMES = ["alp-seed0", "alp-seed1", "madry-seed0", "madry-seed1"]


def compare_args(root, *extra, methods="alp,madry", seeds="0,1"):
    return ["-m", "aalp_tf.compare", f"--source_dir={root / 'mnist'}", *TINY,
            f"--methods={methods}", f"--seeds={seeds}", f"--out={root / 'out'}", *extra]


def snapshot(folder: pathlib.Path) -> dict:
    """Every file under folder and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def in_process(args, monkeypatch, capsys):
    """`python -m aalp_tf.compare ARGS` in this process, for runs that train nothing."""
    from aalp_tf import compare
    return commands.in_process(compare.main, "compare", args, monkeypatch, capsys)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Cells 0 and 1 by two workers at once, then a plain run: each one's (exit status, stdout,
    stderr), and the outputs the workers left."""
    root = tmp_path_factory.mktemp("study")
    write_mnist_files(root / "mnist", splits=tiny_arrays(256, 64))
    runs, procs = {}, Subprocesses()
    try:
        for k in (0, 1):
            procs.start(f"cell{k}", compare_args(root, f"--cell={k}"))
        runs.update({f"cell{k}": procs.result(f"cell{k}") for k in (0, 1)})
        after_workers = {name: (root / "out" / name).read_text()
                         for name in ("results.jsonl", "summary.md")}
        procs.start("plain", compare_args(root))
        runs["plain"] = procs.result("plain")
    finally:
        procs.close()
    return {"root": root, "out": root / "out", "work": root / "out" / "work", "runs": runs,
            "after_workers": after_workers}


def progress_pattern(name):
    return re.compile(rf"^{name} finished in \d+\.\d min \(train \d+\.\d, evaluate \d+\.\d\): "
                      r"clean (\d+\.\d\d)%, pgd3 (\d+\.\d\d)%, apgd-ce5 (\d+\.\d\d)%; "
                      r"(\d+) cells? remains?$", re.M)


@pytest.mark.slow
def test_two_workers_each_run_their_cell_and_leave_outputs_of_both(study):
    for k, name in ((0, "alp-seed0"), (1, "alp-seed1")):
        code, out, err = study["runs"][f"cell{k}"]
        assert code == 0, err
        match = progress_pattern(name).search(out)
        assert match and int(match.group(4)) in (2, 3), out
        assert out.count(": training in ") == 1 and f"{name}: training in " in out
    # Whichever worker wrote last had seen both cells.
    lines = [json.loads(line) for line in study["after_workers"]["results.jsonl"].splitlines()]
    assert [r["cell"] for r in lines] == ["alp-seed0", "alp-seed1"]
    assert "Finished cells: 2 of 4 (missing: madry-seed0, madry-seed1)." in \
           study["after_workers"]["summary.md"]


@pytest.mark.slow
def test_the_plain_run_finishes_the_rest_in_order_and_writes_every_output(study):
    code, out, err = study["runs"]["plain"]
    assert code == 0, err
    for name in ("alp-seed0", "alp-seed1"):
        assert f"{name} already finished ({study['out'] / 'cells' / name}.json): skipped" in out
    assert out.index("madry-seed0: training") < out.index("madry-seed1: training")
    record = json.loads((study["out"] / "cells" / "madry-seed0.json").read_text())
    match = progress_pattern("madry-seed0").search(out)
    assert match.groups() == tuple(f"{100 * record['accuracy'][a]:.2f}" for a in
                                   ("clean", "pgd3", "apgd-ce5")) + ("1",)
    assert "4 of 4 cells finished; wrote " in out
    records = [json.loads(line) for line in (study["out"] / "results.jsonl").read_text()
               .splitlines()]
    assert [r["cell"] for r in records] == NAMES
    for r in records:
        assert r == json.loads((study["out"] / "cells" / f"{r['cell']}.json").read_text())
    assert not list(study["out"].rglob(".*.tmp"))


@pytest.mark.slow
def test_a_cell_record_has_the_study_format(study):
    work = study["work"] / "madry-seed1"
    record = json.loads((study["out"] / "cells" / "madry-seed1.json").read_text())
    assert list(record)[:10] == ["cell", "method", "seed", "config", "evaluation", "epochs",
                                 "accuracy", "checks_failed", "seconds", "code"]
    assert (record["cell"], record["method"], record["seed"]) == ("madry-seed1", "madry", 1)
    assert record["config"] == json.loads((work / "run" / "config.json").read_text())
    assert record["config"]["train"]["model_dir"] == str(work / "run")
    assert record["epochs"] == json.loads((work / "run" / "history.json").read_text())
    assert [e["epoch"] for e in record["epochs"]] == [1, 2]
    assert record["evaluation"] == {"examples": {"clean": 32, "pgd3": 32, "apgd-ce5": 16},
                                    "epsilon": 0.3, "step_size": 0.01, "restarts": 1, "seed": 0,
                                    "checks": True, "check_examples": 8}
    assert list(record["accuracy"]) == ["clean", "pgd3", "apgd-ce5"]
    big, small = (json.loads((work / f"eval-{n}.json").read_text()) for n in (32, 16))
    assert record["accuracy"] == {**big["accuracy"], **small["accuracy"]}
    assert big["model"] == str(work / "export" / "model" / "1") and "checks" not in small
    assert big["checks"]["examples"] == 8 and record["checks_failed"] == big["checks"]["failed"]
    assert set(record["seconds"]) == {"train", "evaluate", "total"}
    assert record["code"].startswith("aalp_tf 0.1.0 (")
    assert (work / "export" / "model" / "1" / "saved_model.pb").is_file()


@pytest.mark.slow
def test_summary_and_figure_hold_the_cells_numbers(study):
    records = {r["cell"]: r for r in map(json.loads, (study["out"] / "results.jsonl")
                                          .read_text().splitlines())}
    text = (study["out"] / "summary.md").read_text()
    assert f"--out={study['out']}" in text and "--cell" not in text
    assert "t values: t_0.975,1 = 12.706 for n = 2." in text
    alp = [100 * records[f"alp-seed{s}"]["accuracy"]["pgd3"] for s in (0, 1)]
    madry = [100 * records[f"madry-seed{s}"]["accuracy"]["pgd3"] for s in (0, 1)]
    s = statistics.summarize(alp)
    assert (f"| pgd3 | alp | 2 | {s.mean:.2f} | {s.sd:.2f} | [{s.low:.2f}, {s.high:.2f}] |"
            in text)
    d = statistics.summarize([m - a for m, a in zip(madry, alp)])
    assert f"| pgd3 | madry | 2 | {d.mean:+.2f} | {d.sd:.2f} | [{d.low:.2f}, {d.high:.2f}] |" \
           in text
    assert "## Difference from alp (percentage points), paired by seed" in text
    image = matplotlib.image.imread(study["out"] / "compare.png")
    assert image.ndim == 3 and image.shape[1] > image.shape[0]  # three panels side by side


@pytest.mark.slow
def test_a_rerun_skips_finished_cells_and_adopts_older_records(study, monkeypatch, capsys):
    out, work = study["out"], study["work"]
    # alp-seed0 as the study's earlier driver wrote it: no settings.json yet, a config without
    # newer fields, an evaluation that does not say the checks were on (they were: the default).
    (out / "settings.json").unlink()
    old = json.loads((out / "cells" / "alp-seed0.json").read_text())
    del old["config"]["model"]["sync_batchnorm"], old["config"]["train"]["mixed_precision"]
    del old["evaluation"]["checks"]
    (out / "cells" / "alp-seed0.json").write_text(json.dumps(old, indent=1) + "\n")
    before = snapshot(work), snapshot(out / "cells")

    again = in_process(compare_args(study["root"])[2:], monkeypatch, capsys)
    assert again.returncode == 0, again.stderr
    for name in NAMES:
        assert f"{name} already finished" in again.stdout
    assert "training" not in again.stdout and "Epoch" not in again.stdout
    assert (snapshot(work), snapshot(out / "cells")) == before  # histories and timings too
    assert json.loads((out / "settings.json").read_text())["evaluation"]["check_examples"] == 8


@pytest.mark.slow
@pytest.mark.parametrize("change,difference", [
    ("--epochs=3", "training.train.epochs: 2 -> 3"),
    ("--attack_examples=apgd-ce5:8", "evaluation.examples.apgd-ce5: 16 -> 8"),
])
@pytest.mark.slow
def test_a_rerun_with_other_settings_is_refused_in_one_line(study, monkeypatch, capsys, change,
                                                            difference):
    out = study["out"]
    before = snapshot(out)
    refused = in_process(compare_args(study["root"], change)[2:], monkeypatch, capsys)
    assert_one_line_error(refused, f"error: --output_dir {out} holds a study with other settings "
                                   f"(settings.json: {difference}); accepted: the same settings "
                                   "(--methods and --seeds may grow), or a new --output_dir")
    assert snapshot(out) == before


def cut_short(work: pathlib.Path) -> None:
    """The state a kill -9 during epoch 2 leaves: checkpoint and history of epoch 1 only, no
    export, no evaluation."""
    run = work / "run"
    for path in (run / "checkpoints").glob("ckpt-2.*"):
        path.unlink()
    (run / "checkpoints" / "checkpoint").write_text(
        'model_checkpoint_path: "ckpt-1"\nall_model_checkpoint_paths: "ckpt-1"\n')
    history = json.loads((run / "history.json").read_text())
    (run / "history.json").write_text(json.dumps(history[:1]))
    (run / "export.json").unlink()
    shutil.rmtree(work / "export")
    for path in work.glob("eval-*.json"):
        path.unlink()


@pytest.mark.slow
def test_a_cut_short_cell_resumes_and_a_written_evaluation_is_reused(study, monkeypatch,
                                                                      capsys):
    out, work, root = study["out"], study["work"], study["root"]
    original = {n: json.loads((out / "cells" / f"{n}.json").read_text())
                for n in ("alp-seed1", "madry-seed1")}
    for name in original:
        (out / "cells" / f"{name}.json").unlink()
    cut_short(work / "madry-seed1")
    listed = in_process(compare_args(root, "--list_cells")[2:], monkeypatch, capsys)
    assert listed.stdout.splitlines() == ["0\talp\t0\tfinished", "1\talp\t1\ttrained",
                                          "2\tmadry\t0\tfinished", "3\tmadry\t1\tstarted:1/2"]

    resumed = command("compare", *compare_args(root)[2:], cwd=root)
    assert resumed.returncode == 0, resumed.stderr
    alp, madry = resumed.stdout.split("madry-seed1: training")
    for n in (32, 16):
        assert f"alp-seed1: reusing {work / 'alp-seed1' / f'eval-{n}.json'}" in alp
    assert "Epoch 1/2" not in alp and "Epoch 2/2" not in alp and "already exported" in alp
    assert f"resuming {work / 'madry-seed1' / 'run'} after epoch 1 of 2" in madry
    assert "Epoch 1/2" not in madry and "Epoch 2/2" in madry
    for name, before in original.items():
        after = json.loads((out / "cells" / f"{name}.json").read_text())
        # The resumed run computes what the uninterrupted one did (a fresh process, from the
        # epoch-1 checkpoint), so the same model is evaluated to the same numbers.
        assert after["epochs"] == before["epochs"], name
        assert after["accuracy"] == before["accuracy"], name
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["cell"] for r in records] == NAMES


@pytest.mark.slow
def test_more_seeds_add_cells_to_the_same_study(study, monkeypatch, capsys):
    out, root = study["out"], study["root"]
    grown = compare_args(root, seeds="0,1,2")[2:]
    listed = in_process([*grown, "--list_cells"], monkeypatch, capsys)
    assert listed.stdout.splitlines() == [
        "0\talp\t0\tfinished", "1\talp\t1\tfinished", "2\talp\t2\tpending",
        "3\tmadry\t0\tfinished", "4\tmadry\t1\tfinished", "5\tmadry\t2\tpending"]
    # Cell 3 of the grown plan is madry-seed0, finished: the run only refreshes the outputs.
    ran = in_process([*grown, "--cell=3"], monkeypatch, capsys)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[0] == (f"madry-seed0 already finished "
                                          f"({out / 'cells' / 'madry-seed0.json'}): skipped")
    assert "Finished cells: 4 of 6 (missing: alp-seed2, madry-seed2)." in \
           (out / "summary.md").read_text()


# ---- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("args,expected", [
    (["--methods=alp,alpp"], "error: --methods names an unknown method: received 'alpp'; "
                             f"accepted: {', '.join(METHODS.names())}"),
    (["--seeds=0,one"], "error: --seeds must be integers >= 0, comma-separated (e.g. 0,1,2); "
                        "received: 0,one"),
    (["--baseline=trades"], "error: --baseline=trades is not among --methods; accepted: alp, "
                            "madry"),
    (["--attack_examples=autoattack20:16"], "error: --attack_examples names autoattack20, which "
                                            "is not in --attacks; accepted: one of clean, pgd3, "
                                            "apgd-ce5"),
    (["--attack_examples=apgd-ce5:64"], "error: --attack_examples apgd-ce5:64 exceeds "
                                        "--test_examples=32; accepted: N in 1..32"),
    (["--attacks=clean,pgd3,apgd-ce5,pgd"], "error: unknown attack: received 'pgd'; accepted: "),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, args,
                                                  expected):
    write_mnist_files(tmp_path / "mnist", splits=tiny_arrays(256, 64))
    result = in_process(compare_args(tmp_path, *args)[2:], monkeypatch, capsys)
    assert_one_line_error(result, expected)
    assert not (tmp_path / "out").exists()


# Slow: a process of its own spends ~5 CPU-s importing TensorFlow. The same message in this
# process: test_bad_input_is_one_line_and_writes_nothing; a real process's exit status and lone
# line: tests/test_cli.py::test_a_bad_value_is_the_one_line_on_stderr_and_nothing_is_written.
@pytest.mark.slow
def test_a_bad_command_exits_with_status_2_in_its_own_process(tmp_path):
    result = command("compare", *compare_args(tmp_path, "--seeds=0,one")[2:], cwd=tmp_path)
    assert_one_line_error(result, "error: --seeds must be integers >= 0, comma-separated (e.g. "
                                  "0,1,2); received: 0,one")
    assert not (tmp_path / "out").exists()



# ---- a full disk (issue 21) -----------------------------------------------------------------


def test_a_full_disk_at_any_file_of_the_study_is_one_line_and_the_rerun_counts_each_cell_once(
        tmp_path, monkeypatch, capsys):
    """Two one-epoch cells, in this process. The disk fills at settings.json, then at the first
    cell's evaluation, the second cell's record, the summary: each time one line naming the
    flag, the file and the space, exit status 2 and no half file; the same command then goes
    on from there, and the study ends with each cell trained once and counted once."""
    write_mnist_files(tmp_path / "mnist", splits=tiny_arrays(192, 32))
    out, work = tmp_path / "out", tmp_path / "out" / "work"
    args = [f"--source_dir={tmp_path / 'mnist'}", "--dataset=mnist", "--train_examples=64",
            "--val_examples=32", "--batch_size=64", "--width=4", "--learning_rate=1e-3",
            "--epochs=1", "--methods=natural", "--seeds=0,1", "--attacks=clean",
            "--test_examples=32", "--nochecks", f"--out={out}"]
    printed = []
    for flag, folder, file in (("--output_dir", out, "settings.json"),
                               ("--runs_dir", work, "natural-seed0/eval-32.json"),
                               ("--output_dir", out, "cells/natural-seed1.json"),
                               ("--output_dir", out, "summary.md")):
        with full_at(pathlib.Path(file).name):
            full = in_process(args, monkeypatch, capsys)
        assert_one_line_error(full, f"error: the disk of {flag} {folder} is full: ")
        assert re.fullmatch(
            re.escape(f"error: the disk of {flag} {folder} is full: {file} needs about ")
            + r"\d+\.\d KB" + re.escape(" and 3.0 KB are free; accepted: free space there (or "
                                        "copy the folder to a disk with room), then run the same "
                                        "command again to resume"),
            full.stderr.splitlines()[-1]), full.stderr
        assert not (folder / file).exists() and temporaries(tmp_path) == [], file
        printed.append(full.stdout)

    done = in_process(args, monkeypatch, capsys)
    assert done.returncode == 0, done.stderr
    for name in ("natural-seed0", "natural-seed1"):
        assert f"{name} already finished ({out / 'cells' / name}.json): skipped" in done.stdout
    assert "2 of 2 cells finished; wrote " in done.stdout
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["cell"] for r in records] == ["natural-seed0", "natural-seed1"]
    assert [[e["epoch"] for e in r["epochs"]] for r in records] == [[1], [1]]
    assert "Finished cells: 2 of 2." in (out / "summary.md").read_text()
    # Each cell trained and exported once; the reruns adopted its run and its evaluation.
    assert "".join(printed).count("exported SavedModel: ") == 2
    for name in ("natural-seed0", "natural-seed1"):
        assert sorted(p.name for p in (work / name / "export" / "model").iterdir()) == ["1"]
    assert f"natural-seed1: reusing {work / 'natural-seed1' / 'eval-32.json'}" in printed[-1]
