import dataclasses
import json
import re

import numpy as np
import pytest
import tensorflow as tf

from aalp_tf.errors import UsageError
from aalp_tf.evaluation.loading import load_serving_logits
from aalp_tf.experiment.training import train
from tests.helpers.tiny import tiny_arrays, tiny_config

ARRAYS = tiny_arrays(160, 32)  # 128 train (4 steps of 32) + 32 validation


def weights(model):
    return [v.numpy() for v in model.weights]


def test_a_run_writes_its_folder_and_an_export_equal_to_the_model(tmp_path):
    cfg = tiny_config(tmp_path / "run", "aalp", epochs=2)
    result = train(cfg, arrays=ARRAYS, verbose=0)
    run = tmp_path / "run"
    assert json.loads((run / "config.json").read_text())["method"]["name"] == "aalp"
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert {"loss", "val_clean_accuracy", "val_robust_accuracy"} <= set(history[-1])
    assert tf.train.latest_checkpoint(str(run / "checkpoints")).endswith("ckpt-2")
    assert any((run / "logs").rglob("events.out.tfevents.*"))
    assert result.export_path == tmp_path / "run_exports" / "mnist_aalp" / "1"

    logits_fn, shape = load_serving_logits(str(result.export_path))
    assert shape == (28, 28, 1)
    x = tf.constant(ARRAYS.x_test / 255.0, tf.float32)
    np.testing.assert_allclose(logits_fn(x), result.model(x), atol=1e-5)


def test_same_seed_same_numbers_and_resume_equals_an_uninterrupted_run(tmp_path, capsys):
    straight = train(tiny_config(tmp_path / "a", "aalp", epochs=2), arrays=ARRAYS, verbose=0)
    again = train(tiny_config(tmp_path / "b", "aalp", epochs=2), arrays=ARRAYS, verbose=0)
    assert straight.history == again.history
    for a, b in zip(weights(straight.model), weights(again.model)):
        np.testing.assert_array_equal(a, b)

    # Interrupted after epoch 1, then the same command with the full length.
    train(tiny_config(tmp_path / "c", "aalp", epochs=1), arrays=ARRAYS, verbose=0,
          export_model=False)
    resumed = train(tiny_config(tmp_path / "c", "aalp", epochs=2), arrays=ARRAYS, verbose=0)
    assert "resuming" in capsys.readouterr().out
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert resumed.history == straight.history
    for a, b in zip(weights(straight.model), weights(resumed.model)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_a_finished_run_is_not_retrained_or_exported_twice(tmp_path, capsys):
    cfg = tiny_config(tmp_path / "run", "natural", epochs=1)
    first = train(cfg, arrays=ARRAYS, verbose=0)
    second = train(cfg, arrays=ARRAYS, verbose=0)
    assert second.export_path == first.export_path
    assert "already exported" in capsys.readouterr().out
    assert [h["epoch"] for h in second.history] == [1]


def test_a_run_folder_with_other_settings_is_refused_and_kept(tmp_path):
    train(tiny_config(tmp_path / "run", "alp", epochs=1), arrays=ARRAYS, verbose=0,
          export_model=False)
    before = (tmp_path / "run" / "config.json").read_text()
    with pytest.raises(UsageError) as err:
        train(tiny_config(tmp_path / "run", "madry", epochs=1), arrays=ARRAYS, verbose=0)
    assert str(err.value) == (f"--model_dir {tmp_path / 'run'} holds a run with other settings "
                              "(method.name: 'alp' -> 'madry'); accepted: the same settings to "
                              "resume it, or a new --model_dir")
    assert (tmp_path / "run" / "config.json").read_text() == before


def test_the_same_folder_spelled_another_way_continues_the_run(tmp_path, monkeypatch, capsys):
    """`--model_dir=./runs/x` after `--model_dir=runs/x` was refused: the stored path differed."""
    monkeypatch.chdir(tmp_path)
    first = train(tiny_config("runs/x", "natural"), arrays=ARRAYS, verbose=0)
    again = train(tiny_config("./runs/x/", "natural"), arrays=ARRAYS, verbose=0)
    assert "already exported: runs/x_exports/mnist_natural/1" in capsys.readouterr().out
    assert again.export_path == first.export_path
    assert [h["epoch"] for h in again.history] == [1]
    assert json.loads((tmp_path / "runs/x/config.json").read_text())["train"]["model_dir"] == (
        "./runs/x/")


def test_an_export_dir_that_is_a_file_is_refused_before_the_run_starts(tmp_path):
    """It failed at the export, after the whole run. (Unwritable folders: tests/test_cli.py.)"""
    (tmp_path / "exports").write_text("")
    cfg = tiny_config(tmp_path / "run", "natural")
    cfg = cfg.replace(train=dataclasses.replace(cfg.train, export_dir=str(tmp_path / "exports")))
    with pytest.raises(UsageError) as err:
        train(cfg, arrays=ARRAYS, verbose=0)
    assert str(err.value) == (f"--export_dir {tmp_path}/exports/mnist_natural: {tmp_path}/exports "
                              "is not a folder; accepted: a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exports"]


def test_a_worker_behind_by_its_first_epoch_makes_the_others_restart_from_ckpt_0(
        tmp_path, monkeypatch):
    """The multi-worker case CI met: one worker was killed before its first checkpoint landed,
    so the others must step back to the starting weights, which only ckpt-0 still holds."""
    from aalp_tf import distribution
    from aalp_tf.runs import RunFolder
    from aalp_tf.experiment.training import EpochCheckpoint
    from aalp_tf.experiment.training import seeded_model
    from aalp_tf.data.datasets import DATASETS
    monkeypatch.setattr(distribution, "is_multi_worker", lambda strategy: True)
    cfg = tiny_config(tmp_path / "run", "natural", epochs=1)
    start = weights(seeded_model(cfg, DATASETS.get("mnist")))
    train(cfg, arrays=ARRAYS, verbose=0, export_model=False)
    ckpts = tf.train.get_checkpoint_state(str(tmp_path / "run/checkpoints"))
    assert [p.rsplit("-", 1)[1] for p in ckpts.all_model_checkpoint_paths] == ["0", "1"]

    model = seeded_model(cfg, DATASETS.get("mnist"))
    checkpoint = EpochCheckpoint(RunFolder(str(tmp_path / "run")), model)
    monkeypatch.setattr(distribution, "agree_on_epoch", lambda strategy, epoch: 0)
    assert checkpoint.restore_agreed(model.distribute_strategy) == 0
    assert checkpoint.history == []
    for a, b in zip(start, weights(model)):
        np.testing.assert_array_equal(a, b)

    (tmp_path / "run/checkpoints/ckpt-0.index").unlink()
    checkpoint.manager = tf.train.CheckpointManager(checkpoint.checkpoint,
                                                    str(tmp_path / "run/checkpoints"), 5)
    with pytest.raises(UsageError, match="different epochs"):
        checkpoint.restore_agreed(model.distribute_strategy)


# ---- what a kill between two writes leaves, repaired on resume (the walk over every write is
# ---- tests/test_crash_safety.py, marked slow) ------------------------------------------------


def test_history_json_lagging_its_checkpoint_is_rebuilt_from_the_checkpoint(tmp_path):
    """A kill after epoch 2's checkpoint and before history.json was replaced."""
    cfg = tiny_config(tmp_path / "run", "natural", epochs=2)
    train(cfg, arrays=ARRAYS, verbose=0, export_model=False)
    path = tmp_path / "run" / "history.json"
    full = json.loads(path.read_text())
    path.write_text(json.dumps(full[:1]))
    resumed = train(cfg.replace(train=cfg.train.__class__(**{**cfg.train.__dict__,
                                                             "epochs": 3})),
                    arrays=ARRAYS, verbose=0, export_model=False)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert json.loads(path.read_text())[:2] == full


def test_restore_removes_the_temporaries_a_killed_write_leaves(tmp_path):
    import os
    import socket
    cfg = tiny_config(tmp_path / "run", "natural", epochs=1)
    train(cfg, arrays=ARRAYS, verbose=0, export_model=False)
    run = tmp_path / "run"
    host = socket.gethostname()
    dead = run / f".history.json.tmp-{host}-999999999"
    alive = run / f".history.json.tmp-{host}-{os.getpid()}"
    other_host = run / ".history.json.tmp-elsewhere-123"
    for path in (dead, alive, other_host, run / "checkpoints" / "checkpoint.tmp0a1b"):
        path.write_text("half")
    (run / "checkpoints" / "ckpt-2_temp").mkdir()
    (run / "checkpoints" / "ckpt-2_temp" / "part-00000-of-00001.index.tempstate123").touch()
    train(cfg, arrays=ARRAYS, verbose=0, export_model=False)
    left = sorted(p.name for p in run.rglob("*") if "tmp" in p.name or "_temp" in p.name)
    assert left == sorted([alive.name, other_host.name])


def test_an_export_that_landed_before_its_record_is_not_exported_again(tmp_path, capsys):
    cfg = tiny_config(tmp_path / "run", "natural", epochs=1)
    first = train(cfg, arrays=ARRAYS, verbose=0)
    (tmp_path / "run" / "export.json").unlink()  # the kill came between the two
    second = train(cfg, arrays=ARRAYS, verbose=0)
    assert second.export_path == first.export_path
    assert sorted(p.name for p in first.export_path.parent.iterdir()) == ["1"]
    assert json.loads((tmp_path / "run" / "export.json").read_text())["path"] == str(
        first.export_path)


def test_a_loss_turning_non_finite_stops_the_run_at_its_last_finite_epoch(tmp_path):
    """Epoch 1 trains; epoch 2's learning rate is infinite: the run says where it stopped, keeps
    epoch 1's checkpoint and exports nothing."""
    import keras

    from aalp_tf.errors import TrainingDiverged

    class BlowUp(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                self.model.optimizer.learning_rate.assign(float("inf"))

    cfg = tiny_config(tmp_path / "run", "aalp", epochs=3)
    with pytest.raises(TrainingDiverged) as caught:
        train(cfg, arrays=ARRAYS, verbose=0, callbacks=[BlowUp()])
    message = str(caught.value)
    assert message.startswith("the training loss turned non-finite at epoch 2, step 2 "
                              "(received: nan); "), message
    assert f"{tmp_path / 'run'} keeps epoch 1, its last finite checkpoint" in message
    run = tmp_path / "run"
    assert tf.train.latest_checkpoint(str(run / "checkpoints")).endswith("ckpt-1")
    assert [h["epoch"] for h in json.loads((run / "history.json").read_text())] == [1]
    assert not (run / "export.json").exists() and not (tmp_path / "run_exports").exists()


def best_by_rule(history):
    """--export_epoch=best: the highest val_robust_accuracy, then val_clean_accuracy, then the
    later epoch."""
    return max(history, key=lambda h: (h["val_robust_accuracy"], h["val_clean_accuracy"],
                                       h["epoch"]))


def test_export_choice_says_why_in_words():
    from aalp_tf.runs import export_choice
    epochs = [{"epoch": 1, "val_robust_accuracy": 0.5, "val_clean_accuracy": 0.9},
              {"epoch": 2, "val_robust_accuracy": 0.5, "val_clean_accuracy": 0.95},
              {"epoch": 3, "val_robust_accuracy": 0.4, "val_clean_accuracy": 0.99}]
    assert export_choice(epochs, "best") == (2, "epoch 2 has the highest val_robust_accuracy "
                                                "(0.5000) of epochs 1-3; the last epoch has 0.4000")
    assert export_choice(epochs[:2], "best") == (2, "the last epoch (2) has the highest "
                                                    "val_robust_accuracy (0.5000) of epochs 1-2")
    assert export_choice(epochs[:1], "best") == (1, "the only epoch (1; val_robust_accuracy "
                                                    "0.5000)")
    assert export_choice(epochs, "last") == (3, "the last epoch (3), as --export_epoch=last asks")


def test_export_epoch_best_exports_the_best_epoch_and_keeps_its_checkpoint(overfit_run):
    from aalp_tf.runs import RunFolder, model_from_run
    _, cfg, result = overfit_run
    robust = [h["val_robust_accuracy"] for h in result.history]
    assert robust[-1] < max(robust), robust  # the run is built so: its last epoch is not its best
    best = best_by_rule(result.history)
    assert result.export_epoch == best["epoch"] < 3
    run = RunFolder(cfg.train.model_dir)
    assert json.loads(run.export_record.read_text()) == {
        "path": str(result.export_path), "epochs": 3, "epoch": best["epoch"],
        "export_epoch": "best",
        "reason": f"epoch {best['epoch']} has the highest val_robust_accuracy "
                  f"({best['val_robust_accuracy']:.4f}) of epochs 1-3; the last epoch has "
                  f"{robust[-1]:.4f}"}
    # --keep_checkpoints=1 kept the last epoch's checkpoint and the best one.
    assert sorted(run.epoch_checkpoints()) == [best["epoch"], 3]
    x = tf.constant(ARRAYS.x_test / 255.0, tf.float32)
    chosen = model_from_run(cfg.train.model_dir, epoch=best["epoch"]).model
    last = model_from_run(cfg.train.model_dir, epoch=3).model
    logits_fn, _ = load_serving_logits(str(result.export_path))
    np.testing.assert_allclose(logits_fn(x), chosen(x), atol=1e-5)
    np.testing.assert_allclose(result.model(x), chosen(x), atol=1e-6)
    assert not np.allclose(last(x), chosen(x), atol=1e-3)

    # The same finished run, asked for its last epoch: exported anew, nothing trained.
    again = train(cfg.replace(train=dataclasses.replace(cfg.train, export_epoch="last")),
                  arrays=ARRAYS, verbose=0)
    assert (again.export_epoch, again.history) == (3, result.history)
    assert again.export_path == result.export_path.parent / str(int(result.export_path.name) + 1)
    logits_fn, _ = load_serving_logits(str(again.export_path))
    np.testing.assert_allclose(logits_fn(x), last(x), atol=1e-5)
    assert json.loads(run.export_record.read_text())["reason"] == (
        "the last epoch (3), as --export_epoch=last asks")


def test_export_epoch_best_without_a_validation_slice_is_refused_before_any_work(tmp_path):
    cfg = tiny_config(tmp_path / "run", "natural")
    with pytest.raises(UsageError) as err:  # the config itself refuses it: nothing can train
        cfg.replace(data=dataclasses.replace(cfg.data, val_examples=0))
    assert str(err.value) == ("--export_epoch=best picks the epoch by val_robust_accuracy, which "
                              "needs a validation slice; received: --val_examples=0; accepted: "
                              "--val_examples > 0, or --export_epoch=last")
    assert not (tmp_path / "run").exists()


def test_a_run_folder_from_before_config_formats_is_refused_in_one_line(tmp_path):
    """A config.json without the format (or of another) is not read with guesses at what the
    code of its day did: resuming, exporting or analysing it is refused, the folder kept."""
    from aalp_tf.config import RunConfig
    from aalp_tf.runs import model_from_run
    cfg = tiny_config(tmp_path / "run", "natural")
    train(cfg, arrays=ARRAYS, verbose=0, export_model=False)
    path = tmp_path / "run" / "config.json"
    raw = json.loads(path.read_text())
    assert raw["format"] == 1 and RunConfig.from_dict(raw) == cfg
    del raw["format"]
    path.write_text(json.dumps(raw))
    message = (f"--model_dir {tmp_path / 'run'} holds a run of another aalp_tf (config.json "
               "format none; this one reads format 1); accepted: a new --model_dir to train it "
               "again, or the aalp_tf that wrote it to resume or export it")
    for attempt in (lambda: train(cfg, arrays=ARRAYS, verbose=0),
                    lambda: model_from_run(tmp_path / "run")):
        with pytest.raises(UsageError) as err:
            attempt()
        assert str(err.value) == message
    assert json.loads(path.read_text()) == raw
    with pytest.raises(UsageError, match=r"^the config was written by another aalp_tf \(format "
                                         r"none, this one reads format 1\); accepted: "):
        RunConfig.from_dict(raw)


def test_a_damaged_newest_checkpoint_is_skipped_saying_so_and_its_epoch_trained_again(
        tmp_path, capsys):
    """Issue 21: ckpt-2's data file cut in half (a full disk, a bad copy): the rerun resumes from
    ckpt-1, says which checkpoint it skipped and why, and ends where an unbroken run ends."""
    straight = train(tiny_config(tmp_path / "straight", "natural", epochs=3), arrays=ARRAYS,
                     verbose=0, export_model=False)
    cfg = tiny_config(tmp_path / "run", "natural", epochs=2, train_args={"keep_checkpoints": 0})
    train(cfg, arrays=ARRAYS, verbose=0, export_model=False)
    (data,) = (tmp_path / "run" / "checkpoints").glob("ckpt-2.data-*")
    data.write_bytes(data.read_bytes()[:data.stat().st_size // 2])
    # As older code left it, without its sha256: the read itself must find the damage.
    (tmp_path / "run" / "checkpoints" / "ckpt-2.sha256").unlink()
    capsys.readouterr()
    resumed = train(cfg.replace(train=dataclasses.replace(cfg.train, epochs=3)), arrays=ARRAYS,
                    verbose=0, export_model=False)
    lines = capsys.readouterr().out.splitlines()
    skipped = [line for line in lines if line.startswith("skipping ")]
    assert len(skipped) == 1 and skipped[0].startswith(
        f"skipping {tmp_path / 'run' / 'checkpoints' / 'ckpt-2'}: it does not read back ("), lines
    assert skipped[0].endswith("); epochs after the next older checkpoint are trained again")
    assert "checksum" not in skipped[0]
    assert f"resuming {tmp_path / 'run'} after epoch 1 of 3" in lines
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert resumed.history == straight.history
    assert json.loads((tmp_path / "run" / "history.json").read_text()) == straight.history
    for a, b in zip(weights(straight.model), weights(resumed.model)):
        np.testing.assert_array_equal(a, b)


def test_a_run_whose_every_checkpoint_is_damaged_is_refused_in_one_line(tmp_path):
    cfg = tiny_config(tmp_path / "run", "natural", epochs=1)
    train(cfg, arrays=ARRAYS, verbose=0, export_model=False)
    (data,) = (tmp_path / "run" / "checkpoints").glob("ckpt-1.data-*")
    data.write_bytes(b"")
    with pytest.raises(UsageError) as err:
        train(cfg, arrays=ARRAYS, verbose=0, export_model=False)
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'run' / 'checkpoints'} holds no checkpoint that "
                              "reads back (ckpt-1 ("), message
    assert message.endswith("); accepted: a new --model_dir, or this one with its checkpoints/ "
                            "moved away to train from the start") and "\n" not in message


def test_a_full_disk_is_one_line_and_the_folder_resumes(tmp_path, monkeypatch):
    """Issue 21, by injection: epoch 2's checkpoint meets a full disk (TensorFlow's
    ResourceExhaustedError), then the export does (ENOSPC); each is one line naming the folder,
    and the same command then finishes with every epoch once and one export."""
    import errno

    from aalp_tf import signatures
    from aalp_tf.files import DiskFull
    cfg = tiny_config(tmp_path / "run", "natural", epochs=2)
    save = tf.train.CheckpointManager.save

    def full_at_epoch_2(manager, checkpoint_number=None, **kwargs):
        if checkpoint_number == 2:
            raise tf.errors.ResourceExhaustedError(
                None, None, "{{function_node __wrapped__SaveV2_dtypes_30_device_/job:localhost}}"
                " ckpt-2_temp/part-00000-of-00001.data-00000-of-00001.tempstate; No space left "
                "on device [Op:SaveV2]")
        return save(manager, checkpoint_number=checkpoint_number, **kwargs)

    monkeypatch.setattr(tf.train.CheckpointManager, "save", full_at_epoch_2)
    with pytest.raises(DiskFull) as err:
        train(cfg, arrays=ARRAYS, verbose=0)
    assert re.fullmatch(
        rf"the disk of --model_dir {re.escape(str(tmp_path / 'run'))} is full: a checkpoint "
        r"needs about \d+\.\d [KMG]B and \d+\.\d [KMG]B are free; accepted: free space there "
        r"\(or copy the folder to a disk with room\), then run the same command again to resume",
        str(err.value)), str(err.value)
    monkeypatch.setattr(tf.train.CheckpointManager, "save", save)

    write_into = signatures.write_into

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(signatures, "write_into", no_space)
    with pytest.raises(DiskFull, match=r"^the disk of --export_dir .*run_exports/mnist_natural "
                                       r"is full: the SavedModel needs about "):
        train(cfg, arrays=ARRAYS, verbose=0)
    monkeypatch.setattr(signatures, "write_into", write_into)
    assert [h["epoch"] for h in json.loads((tmp_path / "run/history.json").read_text())] == [1, 2]

    done = train(cfg, arrays=ARRAYS, verbose=0)
    assert [h["epoch"] for h in done.history] == [1, 2]
    assert sorted(p.name for p in done.export_path.parent.iterdir()) == ["1"]


def flip_a_bit_in_the_middle(path) -> None:
    """A bad disk block or a bad copy: one bit changed, the size unchanged."""
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    path.write_bytes(bytes(raw))


def test_a_flipped_bit_in_the_newest_checkpoint_fails_its_checksum_and_the_run_resumes(
        tmp_path, capsys):
    """Issue 21: ckpt-2's data file keeps its size but one bit changed. Exporting that epoch is
    refused; the rerun skips it in one line naming the file, resumes from ckpt-1 and ends with
    every epoch once and one export."""
    from aalp_tf.files import checksum_mismatch
    from aalp_tf.runs import model_from_run
    cfg = tiny_config(tmp_path / "run", "natural", epochs=2, train_args={"keep_checkpoints": 0})
    train(cfg, arrays=ARRAYS, verbose=0, export_model=False)
    checkpoints = tmp_path / "run" / "checkpoints"
    (data,) = checkpoints.glob("ckpt-2.data-*")
    size = data.stat().st_size
    flip_a_bit_in_the_middle(data)
    assert data.stat().st_size == size
    mismatch = f"checksum mismatch: {data.name} differs from its sha256 in ckpt-2.sha256"
    with pytest.raises(UsageError) as err:
        model_from_run(tmp_path / "run", epoch=2)
    assert str(err.value) == (f"{checkpoints / 'ckpt-2'} no longer holds what was saved "
                              f"({mismatch}); accepted: another epoch of [1, 2] (export --epoch=N; "
                              "train --export_epoch=last exports the last), or the run trained "
                              "again in a new --model_dir")
    capsys.readouterr()
    resumed = train(cfg.replace(train=dataclasses.replace(cfg.train, epochs=3)), arrays=ARRAYS,
                    verbose=0)
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if line.startswith("skipping ")] == [
        f"skipping {checkpoints / 'ckpt-2'}: it does not read back ({mismatch}); epochs after "
        "the next older checkpoint are trained again"]
    assert f"resuming {tmp_path / 'run'} after epoch 1 of 3" in lines
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert json.loads((tmp_path / "run" / "history.json").read_text()) == resumed.history
    assert sorted(p.name for p in resumed.export_path.parent.iterdir()) == ["1"]
    for epoch in (1, 2, 3):  # epoch 2 saved again, and summed again
        assert checksum_mismatch(checkpoints / f"ckpt-{epoch}.sha256") is None


def test_workers_stepping_back_to_a_checkpoint_that_fails_its_checksum_refuse_in_one_line(
        tmp_path, monkeypatch):
    """A multi-worker run resumes at the epoch every worker has (restore_agreed); when the
    chief steps back to a checkpoint whose sums no longer match, it says so in one line instead
    of restoring a flipped bit. The workers' agreement is faked: one process plays the chief."""
    from aalp_tf import distribution
    from aalp_tf.experiment.training import EpochCheckpoint
    from aalp_tf.runs import RunFolder
    cfg = tiny_config(tmp_path / "run", "natural", epochs=2, train_args={"keep_checkpoints": 0})
    result = train(cfg, arrays=ARRAYS, verbose=0, export_model=False)
    checkpoints = tmp_path / "run" / "checkpoints"
    (data,) = checkpoints.glob("ckpt-1.data-*")
    flip_a_bit_in_the_middle(data)
    monkeypatch.setattr(distribution, "agree_on_epoch", lambda strategy, done: 1)
    checkpoint = EpochCheckpoint(RunFolder(str(tmp_path / "run")), result.model, keep=0,
                                 export_epoch="last")
    with pytest.raises(UsageError) as err:
        checkpoint.restore_agreed(result.model.distribute_strategy)
    assert str(err.value) == (
        f"the workers of this run agreed to resume after epoch 1, but {checkpoints / 'ckpt-1'} "
        f"does not read back (checksum mismatch: {data.name} differs from its sha256 in "
        "ckpt-1.sha256); accepted: worker folders whose checkpoints read back, or a new "
        "--model_dir")


def test_each_checkpoint_is_summed_pruned_with_its_sums_and_taken_unverified_without_them(
        tmp_path, capsys):
    """ckpt-N.sha256 lists the sha256 of ckpt-N's files. Epoch 2's sums meet a full disk after
    its checkpoint landed (what a kill between the two leaves too): one line, and the rerun
    resumes from that checkpoint without a word; --keep_checkpoints prunes sums and checkpoint
    together."""
    import hashlib

    from aalp_tf.files import DiskFull
    from tests.helpers.full_disk import full_at, temporaries
    cfg = tiny_config(tmp_path / "run", "natural", epochs=2, train_args={"keep_checkpoints": 2})
    checkpoints = tmp_path / "run" / "checkpoints"
    with full_at("ckpt-2.sha256"):
        with pytest.raises(DiskFull) as err:
            train(cfg, arrays=ARRAYS, verbose=0, export_model=False)
    assert re.fullmatch(rf"the disk of --model_dir {re.escape(str(tmp_path / 'run'))} is full: "
                        r"a checkpoint needs about \d+\.\d KB and 3\.0 KB are free; accepted: free "
                        r"space there \(or copy the folder to a disk with room\), then run the "
                        r"same command again to resume",
                        str(err.value)), str(err.value)
    assert temporaries(tmp_path) == []
    names = sorted(p.name for p in checkpoints.iterdir())
    data = [name for name in names if ".data-" in name]
    assert names == ["checkpoint", data[0], "ckpt-1.index", "ckpt-1.sha256", data[1],
                     "ckpt-2.index"]
    assert (checkpoints / "ckpt-1.sha256").read_text() == "".join(
        f"{hashlib.sha256((checkpoints / name).read_bytes()).hexdigest()}  {name}\n"
        for name in (data[0], "ckpt-1.index"))

    capsys.readouterr()
    resumed = train(cfg.replace(train=dataclasses.replace(cfg.train, epochs=3)), arrays=ARRAYS,
                    verbose=0, export_model=False)
    out = capsys.readouterr().out
    assert "skipping" not in out and f"resuming {tmp_path / 'run'} after epoch 2 of 3" in out
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert sorted(p.name for p in checkpoints.iterdir() if "ckpt-1" in p.name) == []
    assert sorted(p.name for p in checkpoints.glob("*.sha256")) == ["ckpt-3.sha256"]
