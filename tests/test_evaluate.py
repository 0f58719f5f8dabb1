"""python -m aalp_tf.evaluate meeting a full disk (issue 21), in this process on a small Keras
export (nothing trains), and the name of its default output. Its other behaviour as a command is tested in tests/test_cli.py."""
import json
import pathlib

import keras
import numpy as np

from aalp_tf import evaluate
from tests.helpers.commands import assert_one_line_error, in_process
from tests.helpers.full_disk import full_at, temporaries


def kilobytes(path) -> str:
    return f"{path.stat().st_size / 1024:.1f} KB"


def test_a_full_disk_at_either_output_is_one_line_and_the_same_command_then_writes_both(
        tmp_path, monkeypatch, capsys):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(3)])
    model.export(str(tmp_path / "exported"))
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.uniform(size=(10, 6, 6, 1)).astype("float32"))
    np.save(tmp_path / "y.npy", rng.integers(0, 3, 10))
    output, adversarial = tmp_path / "out" / "evaluation.json", tmp_path / "out" / "adv.npz"
    args = [f"--model={tmp_path / 'exported'}", "--epsilon=0.1", "--attacks=clean,fgsm",
            "--nochecks", f"--images={tmp_path / 'x.npy'}", f"--labels={tmp_path / 'y.npy'}",
            f"--output_file={output}", f"--save_adversarial={adversarial}"]

    with full_at("evaluation.json"):
        no_record = in_process(evaluate.main, "evaluate", args, monkeypatch, capsys)
    assert_one_line_error(no_record, f"error: the disk of --output_file {output} is full: ")
    assert not output.exists() and not adversarial.exists() and temporaries(tmp_path) == []

    with full_at("adv.npz"):
        no_images = in_process(evaluate.main, "evaluate", args, monkeypatch, capsys)
    assert_one_line_error(no_images, f"error: the disk of --save_adversarial {adversarial} is "
                                     "full: ")
    record = json.loads(output.read_text())  # the numbers, whole, before the images
    assert not adversarial.exists() and temporaries(tmp_path) == []

    done = in_process(evaluate.main, "evaluate", args, monkeypatch, capsys)
    assert done.returncode == 0, done.stderr
    assert f"wrote {output}\nwrote {adversarial}\n" in done.stdout
    assert json.loads(output.read_text()) == record
    assert set(np.load(adversarial)) == {"labels", "correct_clean", "adversarial_clean",
                                         "correct_fgsm", "adversarial_fgsm"}
    # The one lines, now that the files' sizes are known: what each write needed.
    assert no_record.stderr.splitlines()[-1] == (
        f"error: the disk of --output_file {output} is full: the file needs about "
        f"{kilobytes(output)} and 3.0 KB are free; accepted: free space there (or a "
        "--output_file on a disk with room), then run the command again")
    assert no_images.stderr.splitlines()[-1] == (
        f"error: the disk of --save_adversarial {adversarial} is full: the file needs about "
        f"{kilobytes(adversarial)} and 3.0 KB are free; accepted: free space there (or a "
        "--save_adversarial on a disk with room), then run the command again")


def test_the_default_output_is_named_after_the_model():
    from aalp_tf.evaluation.suite import default_output
    assert default_output("saved_models/mnist_aalp/1") == pathlib.Path(
        "evaluation/mnist_aalp-1.json")
    assert default_output("exports/mart.keras") == pathlib.Path("evaluation/mart.json")
