"""evaluation.loading and aalp_tf.evaluate_model on models and data aalp_tf did not make: a
plain Keras classifier as an object, a .keras file and a `model.export` SavedModel; one-line
errors naming the argument the user passed; per-example results and adversarial examples."""
import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import aalp_tf
from aalp_tf.errors import UsageError
from aalp_tf.evaluation import loading

RNG = np.random.default_rng(0)
X = RNG.uniform(size=(12, 6, 6, 1)).astype(np.float32)
Y = RNG.integers(0, 3, size=12)


def classifier(classes=3, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(classes)])


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    """A plain Keras classifier, and the SavedModel and .keras file it writes itself."""
    folder = tmp_path_factory.mktemp("foreign")
    model = classifier()
    model.export(str(folder / "exported"))  # serving_default: keras_tensor -> output_0
    model.save(str(folder / "model.keras"))
    return model, folder


def test_a_keras_export_a_keras_file_and_a_model_object_give_the_same_logits(foreign):
    model, folder = foreign
    expected = model(X).numpy()
    for path in (folder / "exported", folder / "model.keras"):
        logits_fn, shape = loading.load_logits(str(path))
        assert shape == (6, 6, 1)
        np.testing.assert_allclose(logits_fn(tf.constant(X)).numpy(), expected, atol=1e-5)
    records = [aalp_tf.evaluate_model(m, (X, Y), attacks=["clean", "pgd3"], epsilon=0.1,
                                      step_size=0.05, checks=False)
               for m in (model, str(folder / "exported"), str(folder / "model.keras"))]
    assert all(r["accuracy"] == records[0]["accuracy"] for r in records)


def test_a_signature_with_several_outputs_needs_output_key_and_names_them(tmp_path):
    module = tf.Module()
    module.dense = classifier()

    @tf.function(input_signature=[tf.TensorSpec([None, 6, 6, 1])])
    def serve(pixels):
        logits = module.dense(pixels)
        return {"scores": logits, "probabilities": tf.nn.softmax(logits)}

    @tf.function(input_signature=[tf.TensorSpec([None, 6, 6, 1]), tf.TensorSpec([None])])
    def two_inputs(pixels, weights):
        return {"scores": module.dense(pixels) * weights[:, None]}

    tf.saved_model.save(module, str(tmp_path / "one"), signatures={"serving_default": serve})
    tf.saved_model.save(module, str(tmp_path / "two"), signatures={"serving_default": two_inputs})
    with pytest.raises(UsageError, match=r"^--model \S+: serving_default has outputs "
                       r"\['probabilities', 'scores'\].*accepted: --output_key one of"):
        loading.load_logits(str(tmp_path / "one"))
    with pytest.raises(UsageError, match=r"^--model \S+: serving_default has inputs "
                       r"\['pixels', 'weights'\]; accepted: a signature with one image input"):
        loading.load_logits(str(tmp_path / "two"))
    with pytest.raises(UsageError, match=r"no output 'logits'; accepted: --output_key one of"):
        loading.load_logits(str(tmp_path / "one"), output_key="logits")
    logits_fn, _ = loading.load_logits(str(tmp_path / "one"), output_key="scores")
    np.testing.assert_allclose(logits_fn(tf.constant(X)), module.dense(X), atol=1e-5)
    with pytest.raises(ValueError, match=r"`model`.*output_key= one of"):  # the library's names
        aalp_tf.evaluate_model(str(tmp_path / "one"), (X, Y), attacks=["clean"], epsilon=0.1)


def test_library_errors_name_the_argument_not_the_flag(tmp_path):
    with pytest.raises(ValueError) as err:
        aalp_tf.evaluate_model(str(tmp_path / "nothing.keras"), (X, Y), attacks=["clean"],
                               epsilon=0.1)
    assert "--model" not in str(err.value) and "model=" in str(err.value)
    with pytest.raises(ValueError) as err:
        aalp_tf.evaluate_model(str(tmp_path), (X, Y), attacks=["clean"], epsilon=0.1)
    assert "--model" not in str(err.value) and len(str(err.value).splitlines()) == 1


def test_one_hot_labels_and_labels_beyond_the_logits_are_one_line(foreign):
    model, _ = foreign
    with pytest.raises(ValueError) as err:
        aalp_tf.evaluate_model(model, (X, np.eye(3)[Y]), attacks=["clean"], epsilon=0.1)
    assert len(str(err.value).splitlines()) == 1 and "argmax" in str(err.value)
    labels = np.arange(12) % 10  # 10 classes for a 3-logit model: refused, not scored
    with pytest.raises(ValueError, match=re.escape("labels in [0, 2]: the model has 3 logits. "
                                                   "Received: labels up to 9")):
        aalp_tf.evaluate_model(model, (X, labels), attacks=["clean"], epsilon=0.1)


def test_the_result_holds_each_examples_correctness_and_the_adversarial_examples(foreign):
    model, _ = foreign
    record = aalp_tf.evaluate_model(model, (X, Y), attacks=["clean", "fgsm", "pgd5"],
                                    epsilon=0.1, step_size=0.05, checks=False, batch_size=5)
    np.testing.assert_array_equal(record["labels"], Y)
    predicted = model(X).numpy().argmax(-1)
    np.testing.assert_array_equal(record["correct"]["clean"], predicted == Y)
    for name in ("fgsm", "pgd5"):
        adversarial = record["adversarial"][name]
        assert adversarial.shape == X.shape
        assert np.abs(adversarial - X).max() <= 0.1 + 1e-6
        np.testing.assert_array_equal(record["correct"][name],
                                      model(adversarial).numpy().argmax(-1) == Y)
        assert record["accuracy"][name] == pytest.approx(record["correct"][name].mean())
    np.testing.assert_array_equal(record["adversarial"]["clean"], X)
    light = aalp_tf.evaluate_model(model, (X, Y), attacks=["clean"], epsilon=0.1, checks=False,
                                   keep_adversarial=False)
    assert "adversarial" not in light and light["correct"]["clean"].shape == (12,)


def test_the_attacks_are_public_and_their_docstring_example_runs(foreign):
    import doctest

    from aalp_tf.evaluation import robustness

    assert aalp_tf.attack is robustness.attack
    failures, tried = doctest.testmod(robustness, verbose=False)[:2]
    assert (failures, tried > 0) == (0, True)
    model, _ = foreign
    record = aalp_tf.evaluate_model(model, (X, Y), attacks=["pgd3"], epsilon=0.1,
                                    step_size=0.05, checks=False)
    np.testing.assert_array_equal(
        aalp_tf.attack(model, X, Y, name="pgd3", epsilon=0.1, step_size=0.05),
        record["adversarial"]["pgd3"])  # the same seeds per example as the evaluation


def test_the_readme_foreign_model_example_runs_end_to_end(tmp_path, monkeypatch, capsys):
    import shlex

    from aalp_tf import evaluate
    from tests.helpers.commands import in_process
    from tests.helpers.readme import README, python_blocks, shrunk

    heading = "## Evaluating your own model and data"
    build, read, head = python_blocks(heading)
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)  # tiny arrays in place of the MNIST download
    tiny = (rng.integers(0, 256, size=(40, 28, 28), dtype=np.uint8), rng.integers(0, 10, 40))
    exec(shrunk(build, {"keras.datasets.mnist.load_data()": "(tiny, None)",
                        "x[:100]": "x[:20]", "y[:100]": "y[:20]"}), {"tiny": tiny})
    text = README.read_text()
    start = text.index(heading)
    line = text[text.index("python -m aalp_tf.evaluate --model=my_classifier", start):]
    line = line[:line.index("```")].replace("\\\n", " ")
    argv = shlex.split(line)[3:] + ["--nochecks", "--output_file=out.json"]
    result = in_process(evaluate.main, "evaluate", argv, monkeypatch, capsys)
    assert result.returncode == 0, result.stderr
    assert re.search(r"  pgd20: \d+ of 20 examples wrong: \[", result.stdout)
    scope = {"np": np}
    exec(read, scope)
    assert scope["x_adv"].shape == (20, 28, 28, 1) and scope["still_right"].shape == (20,)
    assert f"version = {{{aalp_tf.__version__}}}" in text  # the citation's version is current
    classifier = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Flatten(),
                                   keras.layers.Dense(8), keras.layers.Dense(10,
                                                                             activation="softmax")])
    scope = {"keras": keras, "aalp_tf": aalp_tf, "classifier": classifier}
    exec(head, scope)  # the head cut off: features [N, 8] in, AdversarialModel's logits out
    assert scope["backbone"].output.shape == (None, 8)
    assert scope["model"](X).shape == (12, 10)


def test_loading_a_keras_file_of_the_model_needs_import_aalp_tf(tmp_path):
    """The README says why: Keras imports a saved class's module itself only for its own
    packages (keras, keras_hub, keras_cv, keras_nlp). Should a Keras do it for ours, the first
    load below works and the README's sentence must go."""
    import json
    import subprocess
    import sys
    import zipfile

    from tests.helpers.commands import REPO
    from tests.helpers.readme import README

    backbone = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Flatten()])
    model = aalp_tf.AdversarialModel(backbone, num_classes=3, epsilon=0.1, step_size=0.05,
                                     attack_steps=2)
    model.compile(optimizer="adam")
    model.save(str(tmp_path / "adversarial.keras"))
    saved = json.loads(zipfile.ZipFile(tmp_path / "adversarial.keras").read("config.json"))
    assert (saved["module"], saved["registered_name"]) == ("aalp_tf.trainer",
                                                           "aalp_tf>AdversarialModel")
    script = ("import sys, keras\n"
              "try:\n"
              "    keras.saving.load_model(sys.argv[1])\n"
              "except TypeError as err:\n"
              "    print(str(err).split('.')[0])\n"
              "import aalp_tf\n"
              "print(type(keras.saving.load_model(sys.argv[1])).__name__)\n")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "adversarial.keras")],
                            env={**os.environ, "PYTHONPATH": str(REPO),
                                 "TF_CPP_MIN_LOG_LEVEL": "3"},
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["Could not locate class 'AdversarialModel'",
                                          "AdversarialModel"]
    # The README quotes that error, and says why the import is needed.
    text = " ".join(README.read_text().split())
    assert ("needs `import aalp_tf` first (`keras.models.load_model` otherwise says `Could not "
            "locate class 'AdversarialModel'`)") in text
    assert "for the packages `keras`, `keras_hub`, `keras_cv` and `keras_nlp`" in text
