"""The library as a user meets it (aalp_tf/__init__.py): AdversarialModel on a backbone of their
own, Keras' fit, callbacks, save/load_model and export, aalp_tf.evaluate_model, and the README's
examples, run on tiny shapes so they cannot rot."""
import json
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import aalp_tf
from aalp_tf.config import MethodConfig
from aalp_tf.tuning.config import TuneConfig
from aalp_tf.evaluation import robustness
from aalp_tf.methods import METHODS
from aalp_tf.serving import request_protos, saved_model
from aalp_tf.tuning import search_space
from tests.helpers.readme import python_blocks, shrunk
from tests.helpers.tiny import digit_like_images, tiny_config

X_UINT8, Y = digit_like_images(64, seed=3)
X = (X_UINT8 / 255.0).astype(np.float32)
ATTACK = dict(epsilon=0.3, step_size=0.1, attack_steps=2)


def small_cnn():
    """A backbone none of our registries knows."""
    return keras.Sequential([keras.layers.Conv2D(4, 5, strides=2, activation="relu"),
                             keras.layers.Flatten(),
                             keras.layers.Dense(16, activation="relu")], name="small_cnn")


def adversarial_model(method="aalp", backbone=None, **arguments):
    keras.utils.set_random_seed(0)
    model = aalp_tf.AdversarialModel(backbone or small_cnn(), num_classes=10, method=method,
                                     **{**ATTACK, **arguments})
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


def weights(model):
    return [v.numpy().copy() for v in model.weights]


# ---- the package ------------------------------------------------------------------------


def test_import_aalp_tf_gives_the_public_api():
    import aalp_tf.evaluate  # noqa: F401 (the command module: it no longer hides the function)

    assert aalp_tf.evaluate_model is robustness.evaluate_model
    assert aalp_tf.AdversarialModel.__module__ == "aalp_tf.trainer"
    assert keras.saving.get_registered_name(aalp_tf.AdversarialModel) == \
        "aalp_tf>AdversarialModel"
    assert keras.saving.get_registered_name(aalp_tf.GuidedDropout) == "aalp_tf>GuidedDropout"


# ---- any backbone, any method -------------------------------------------------------------


@pytest.mark.parametrize("method,guided_dropout", [(m, False) for m in METHODS.names()]
                         + [("madry", True)])
def test_every_method_trains_a_backbone_no_registry_knows(method, guided_dropout):
    model = adversarial_model(method, guided_dropout=guided_dropout)
    model.build((None, 28, 28, 1))
    before = weights(model)
    history = model.fit(X, Y, batch_size=32, epochs=1, verbose=0, validation_data=(X, Y))
    logs = {k: v[-1] for k, v in history.history.items()}
    assert np.isfinite(logs["loss"])
    assert {"val_clean_accuracy", "val_robust_accuracy", "val_ce_clean"} <= set(logs)
    assert "val_loss" not in logs  # the method's loss is not what validation measures
    assert set(METHODS.get(method).logs) <= set(logs)
    assert all(not np.array_equal(b, a) for b, a in zip(before, weights(model)))
    assert model.use_guided_dropout is (guided_dropout or METHODS.get(method).guided_dropout)


class Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(4, 5, strides=2, activation="relu")
        self.pool = keras.layers.GlobalAveragePooling2D()

    def call(self, images):
        return self.pool(self.conv(images))


def functional_cnn():
    images = keras.Input((28, 28, 1))
    return keras.Model(images, keras.layers.Flatten()(keras.layers.Conv2D(2, 7, strides=4)(images)))


@pytest.mark.parametrize("backbone,features", [(functional_cnn, 72), (Subclassed, 4)])
def test_functional_and_subclassed_backbones_train(backbone, features):
    model = adversarial_model("alp", backbone=backbone())
    logs = model.train_on_batch(X[:32], Y[:32], return_dict=True)
    assert np.isfinite(logs["loss"])
    assert model.classifier.kernel.shape == (features, 10)
    assert model.predict(X[:5], verbose=0).shape == (5, 10)


def test_a_backbone_not_returning_n_by_f_is_refused_in_one_line():
    images = keras.Input((28, 28, 1))
    spatial = keras.Model(images, keras.layers.Conv2D(3, 5, name="c")(images), name="spatial")
    with pytest.raises(ValueError) as err:
        aalp_tf.AdversarialModel(spatial, num_classes=10, **ATTACK)
    assert str(err.value) == (
        "Invalid value received for argument `backbone`. Expected a model returning features "
        "of shape [N, F] (end it with e.g. keras.layers.Flatten() or "
        "keras.layers.GlobalAveragePooling2D()). Received: backbone 'spatial' returning shape "
        "(None, 24, 24, 3)")

    class NoPool(Subclassed):
        def call(self, images):
            return self.conv(images)

    model = aalp_tf.AdversarialModel(NoPool(name="no_pool"), num_classes=10, **ATTACK)
    with pytest.raises(ValueError, match=r"Received: backbone 'no_pool' returning shape "
                                         r"\(None, 12, 12, 4\)$"):
        model.build((None, 28, 28, 1))


def classifier(last):
    return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(name="flatten"),
                             keras.layers.Dense(16, activation="relu", name="fc"), *last],
                            name="classifier")


FEATURES_NOT_A_CLASSIFIER = (
    "Invalid value received for argument `backbone`. Expected a backbone ending in its "
    "features, not in a classifier's output (for a classifier, pass keras.Model("
    "classifier.inputs, classifier.layers[-2].output)). Received: backbone 'classifier' whose "
    "last layer ")


@pytest.mark.parametrize("last,received", [
    ([keras.layers.Dense(10, activation="softmax", name="probs")],
     "'probs' has activation 'softmax'"),
    ([keras.layers.Dense(1, activation="sigmoid", name="probs")],
     "'probs' has activation 'sigmoid'"),
    ([keras.layers.Dense(10, name="logits"), keras.layers.Softmax(name="softmax")],
     "'softmax' has activation 'softmax'"),
    ([keras.layers.Dense(10, name="logits")], "'logits' is Dense(10), num_classes=10"),
])
def test_a_classifier_passed_as_the_backbone_is_refused_in_one_line(last, received):
    # Accepted today, it trains a second logits layer on probabilities: the pairing term of
    # softmax outputs logs ~0 and nothing says why.
    with pytest.raises(ValueError) as err:
        aalp_tf.AdversarialModel(classifier(last), num_classes=10, **ATTACK)
    assert str(err.value) == FEATURES_NOT_A_CLASSIFIER + received


def test_the_features_of_a_classifier_are_the_backbone_the_message_names():
    whole = classifier([keras.layers.Dense(10, activation="softmax")])
    features = keras.Model(whole.inputs, whole.layers[-2].output)
    model = adversarial_model("alp", backbone=features)
    assert np.isfinite(model.train_on_batch(X[:32], Y[:32], return_dict=True)["loss"])
    assert model.classifier.kernel.shape == (16, 10)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_a_channels_first_backbone_is_refused_in_one_line(shape):
    images = keras.Input(shape)
    # "same": Keras builds it over (1, 28) with 28 channels, and would train on that.
    conv = keras.layers.Conv2D(4, 3, padding="same")(images)
    pooled = keras.layers.GlobalAveragePooling2D()(conv)
    with pytest.raises(ValueError) as err:
        aalp_tf.AdversarialModel(keras.Model(images, pooled, name="nchw"), num_classes=10,
                                 **ATTACK)
    assert str(err.value) == (
        "Invalid value received for argument `backbone`. Expected a backbone taking images "
        f"[H, W, C], channels last (e.g. keras.Input({(*shape[1:], shape[0])}); transpose NCHW "
        "data with np.transpose(x, (0, 2, 3, 1))). Received: backbone 'nchw' whose keras.Input "
        f"has shape {shape}, channels first")


def test_channels_first_images_are_refused_by_a_backbone_without_an_input():
    # Without an Input the first batch builds the model: it used to train, evaluate and export
    # on NCHW images as images 1 pixel high with 28 channels.
    nchw = np.transpose(X[:32], (0, 3, 1, 2))
    expected = ("Invalid value received for argument `x`. Expected images [N, H, W, C], channels "
                "last (e.g. keras.Input((28, 28, 1)); transpose NCHW data with np.transpose(x, "
                "(0, 2, 3, 1))). Received: images of shape {}, channels first")
    # "same": Keras would build it over (1, 28) with 28 channels, and train on that.
    same = lambda: keras.Sequential([keras.layers.Conv2D(4, 3, padding="same"),  # noqa: E731
                                     keras.layers.GlobalAveragePooling2D()])
    for run in (lambda m: m.fit(nchw, Y[:32], batch_size=16, epochs=1, verbose=0),
                lambda m: m.evaluate(nchw, Y[:32], batch_size=16, verbose=0)):
        model = adversarial_model("alp", backbone=same())
        with pytest.raises(ValueError) as err:
            run(model)
        assert str(err.value) == expected.format((16, 1, 28, 28))
        assert not model.built
    with pytest.raises(ValueError) as err:
        adversarial_model("alp", backbone=same()).build((None, 1, 28, 28))
    assert str(err.value) == expected.format((None, 1, 28, 28))


@pytest.mark.parametrize("arguments,message", [
    (dict(method="mart2"), "method must be one of aalp, aalp_gd, aalp_sw, alp, madry, natural, "
                           "trades (or one added with aalp_tf.register_method); received: "
                           "'mart2'"),
    (dict(epsilon=8), "epsilon must be in (0, 1] (pixel units, e.g. 0.3 or 8/255); received: 8"),
    (dict(attack_steps=0), "attack_steps must be an integer >= 1; received: 0"),
    (dict(num_classes=1), "num_classes must be an integer >= 2; received: 1"),
    (dict(keep_fraction=0), "keep_fraction must be in (0, 1]; received: 0"),
])
def test_bad_arguments_are_refused_in_one_line(arguments, message):
    with pytest.raises(ValueError) as err:
        aalp_tf.AdversarialModel(small_cnn(), **{"num_classes": 10, **ATTACK, **arguments})
    assert str(err.value) == message


def test_a_loss_given_to_compile_is_refused_not_ignored():
    model = aalp_tf.AdversarialModel(small_cnn(), num_classes=10, **ATTACK)
    with pytest.raises(ValueError) as err:
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    assert str(err.value) == (
        "Invalid value received for argument `loss`. Expected None: AdversarialModel trains "
        "with its method's loss and logs its own metrics (choose the method with `method=`). "
        "Received: loss='sparse_categorical_crossentropy'")


# ---- fit's inputs -------------------------------------------------------------------------


def test_fit_takes_a_dataset_and_refuses_uint8_images_and_one_hot_labels():
    model = adversarial_model("madry")
    dataset = tf.data.Dataset.from_tensor_slices((X, Y)).batch(32)
    history = model.fit(dataset, epochs=1, verbose=0)
    assert len(history.history["loss"]) == 1 and int(model.optimizer.iterations) == 2
    with pytest.raises(ValueError, match=re.escape(
            "Invalid value received for argument `x`. Expected float images in [0, 1] (divide "
            "uint8 pixels by 255). Received: x of dtype uint8")):
        model.fit(X_UINT8, Y, batch_size=32, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=re.escape(
            "Invalid value received for argument `y`. Expected integer class ids of shape [N] "
            "or [N, 1] (not one-hot). Received: y of dtype float32 and shape (32, 10)")):
        model.fit(X, np.eye(10, dtype=np.float32)[Y], batch_size=32, epochs=1, verbose=0)


def test_a_corrected_batch_trains_after_a_refused_one_on_an_unbuilt_model():
    """The refusal comes while Keras traces the step, which built the model's variables inside
    that trace; the corrected call must trace afresh, not fail in Keras' words ("Creating
    variables on a non-first call to a function decorated with tf.function")."""
    backbone = keras.Sequential([keras.layers.Conv2D(4, 3, padding="same"),
                                 keras.layers.Flatten(), keras.layers.Dense(8)])
    model = adversarial_model("alp", backbone=backbone)
    assert not model.built  # no Input: the first batch builds it, inside the traced step
    for call in (lambda x: model.fit(x, Y[:32], batch_size=32, epochs=1, verbose=0),
                 lambda x: model.evaluate(x, Y[:32], batch_size=32, verbose=0)):
        with pytest.raises(ValueError, match="divide uint8 pixels by 255"):
            call(X_UINT8[:32])
        call(X[:32])
    assert int(model.optimizer.iterations) == 1


@pytest.mark.parametrize("images, labels, message", [
    (X * 255, Y, "Expected float images in [0, 1] (divide uint8 pixels by 255). Received: a "
                 "batch with values outside [0, 1], or NaN"),
    (np.where(X > 0.5, np.nan, X).astype(np.float32), Y,
     "Expected float images in [0, 1] (divide uint8 pixels by 255)"),
    (X, Y + 10, "Expected class ids in [0, 10). Received: a batch with a label outside them"),
])
def test_fit_and_evaluate_refuse_pixels_outside_0_1_and_unknown_classes_before_a_step(
        images, labels, message):
    model = adversarial_model("aalp")
    before = weights(model)
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
        model.fit(images, labels, batch_size=32, epochs=1, verbose=0)
    for a, b in zip(before, weights(model)):  # the first batch moved no weight
        np.testing.assert_array_equal(a, b)
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
        model.evaluate(images, labels, batch_size=32, verbose=0)


def test_evaluate_refuses_images_outside_0_1_and_a_wrong_shape_in_one_line():
    model = adversarial_model("alp")
    bad = X[:8].copy()
    bad[0, 0, 0, 0] = np.nan
    top = f"{X[:8].max() * 255:g}"
    for images, received in ((X[:8] * 255, f"values in [0, {top}] and 0 NaN or inf"),
                             (bad, "and 1 NaN or inf")):
        with pytest.raises(ValueError) as err:
            aalp_tf.evaluate_model(model, (images, Y[:8]), attacks=["clean"])
        assert str(err.value).startswith("the test images must be float pixels in [0, 1]; ")
        assert received in str(err.value)
    with pytest.raises(ValueError, match=re.escape(
            "Invalid value received for argument `data`. Expected images of shape [N, H, W, C]. "
            "Received: images of shape (8, 28, 28)")):
        aalp_tf.evaluate_model(model, (X[:8, ..., 0], Y[:8]), attacks=["clean"])


def test_sample_weights_scale_each_examples_loss():
    """An example of weight 0 cannot move the weights: its label may be anything."""
    weight = np.array([1.0] * 16 + [0.0] * 16, np.float32)
    other = Y[:32].copy()
    other[16:] = (other[16:] + 1) % 10
    after = {}
    for name, labels, sample_weight in (("weighted", Y[:32], weight),
                                        ("other labels", other, weight),
                                        ("unweighted, other labels", other, None)):
        model = adversarial_model("aalp")
        logs = model.train_on_batch(X[:32], labels, sample_weight=sample_weight,
                                    return_dict=True)
        after[name] = (weights(model), logs["loss"])
    for a, b in zip(after["weighted"][0], after["other labels"][0]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert after["weighted"][1] == pytest.approx(after["other labels"][1], rel=1e-6)
    assert not all(np.allclose(a, b) for a, b in zip(after["weighted"][0],
                                                     after["unweighted, other labels"][0]))


def test_class_weight_reaches_the_loss_as_sample_weights():
    """Keras turns class_weight into sample weights: classes of weight 0 teach nothing."""
    zero_above_4 = {c: float(c < 5) for c in range(10)}
    relabelled = np.where(Y >= 5, 9, Y)  # zero-weight examples moved to another zero class
    after = []
    for labels in (Y, relabelled):
        model = adversarial_model("natural")
        model.fit(X, labels, batch_size=64, epochs=1, verbose=0, shuffle=False,
                  class_weight=zero_above_4)
        after.append(weights(model))
    for a, b in zip(*after):
        np.testing.assert_array_equal(a, b)


# ---- Keras' callbacks, save / load_model ----------------------------------------------------


class StopAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raise RuntimeError("preempted")


def test_keras_callbacks_watch_val_robust_accuracy_and_a_run_resumes(tmp_path):
    model = adversarial_model("alp")
    model.build((None, 28, 28, 1))  # BackupAndRestore wants a built model, as Keras says
    best = keras.callbacks.ModelCheckpoint(str(tmp_path / "best.keras"),
                                           monitor="val_robust_accuracy", mode="max",
                                           save_best_only=True)
    early = keras.callbacks.EarlyStopping(monitor="val_robust_accuracy", mode="max", patience=5)
    callbacks = [best, early, keras.callbacks.BackupAndRestore(str(tmp_path / "backup")),
                 keras.callbacks.TensorBoard(str(tmp_path / "logs"))]
    fit = dict(x=X, y=Y, batch_size=32, epochs=3, validation_data=(X[:32], Y[:32]), verbose=0)
    with pytest.raises(RuntimeError, match="preempted"):
        model.fit(**fit, callbacks=callbacks + [StopAfterFirstEpoch()])
    assert int(model.optimizer.iterations) == 2
    resumed = model.fit(**fit, callbacks=callbacks)
    assert len(resumed.history["loss"]) == 2  # epochs 2 and 3: BackupAndRestore resumed
    assert int(model.optimizer.iterations) == 6
    assert early.best == max(resumed.history["val_robust_accuracy"])
    loaded = keras.models.load_model(tmp_path / "best.keras")
    assert isinstance(loaded, aalp_tf.AdversarialModel) and loaded.method_config.name == "alp"
    assert any((tmp_path / "logs" / "validation").glob("events.out.tfevents.*"))


def test_save_and_load_model_round_trip_and_the_loaded_model_trains_on(tmp_path):
    model = adversarial_model("madry", guided_dropout=True, keep_fraction=0.25, gd_rescale=True,
                              alpha=0.5, trades_beta=3.0, seed=7, val_attack_steps=3)
    model.fit(X, Y, batch_size=32, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")  # no custom_objects
    # Through JSON, which is what a .keras file holds: a tuple comes back a list.
    assert json.dumps(loaded.get_config(), sort_keys=True) == json.dumps(model.get_config(),
                                                                         sort_keys=True)
    assert loaded.use_guided_dropout and loaded.guided_dropout.keep_fraction == 0.25
    assert loaded.attack_config == model.attack_config
    np.testing.assert_array_equal(loaded.predict(X, verbose=0), model.predict(X, verbose=0))
    assert [v.numpy().tolist() for v in loaded.optimizer.variables] == [
        v.numpy().tolist() for v in model.optimizer.variables]  # step count and Adam's moments
    for m in (model, loaded):  # the same next epoch: same state, same stateless random starts
        m.fit(X, Y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(weights(model), weights(loaded)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ---- export --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An aalp model on the small CNN after one epoch, and its export."""
    model = adversarial_model("aalp")
    model.fit(X, Y, batch_size=32, epochs=1, verbose=0)
    path = model.export(tmp_path_factory.mktemp("export") / "saved_models" / "my_model" / "1")
    return model, path


def test_export_is_the_serving_savedmodel_without_the_optimizer(trained):
    model, path = trained
    loaded = tf.saved_model.load(str(path))
    logits = loaded.signatures["serving_default"](images=tf.constant(X))["logits"].numpy()
    np.testing.assert_allclose(logits, model.predict(X, verbose=0), atol=1e-5)
    uint8 = loaded.signatures["predict_uint8"](images=tf.constant(X_UINT8))["logits"].numpy()
    np.testing.assert_allclose(uint8, logits, atol=1e-5)
    # Warm-up records need TF Serving's protos: serving.saved_model.export_model writes them.
    assert not (path / "assets.extra" / saved_model.WARMUP_ASSET).exists()
    saved = dict(tf.train.list_variables(str(path / "variables" / "variables")))
    assert [name for name in saved if "optimizer" in name] == []
    # ExportArchive's `variables` list: the model's variables, nothing else. (It also keeps
    # `_all_variables`, a second copy of the same values, as the hand-made tracking did.)
    weights = sum(int(np.prod(s)) for n, s in saved.items() if n.startswith("variables/"))
    assert weights == model.count_params()
    with pytest.raises(ValueError, match="already exists"):
        model.export(path)


# ---- aalp_tf.evaluate_model ----------------------------------------------------------------------


def test_evaluate_takes_a_model_a_function_a_savedmodel_and_any_batches(trained, capsys):
    model, path = trained
    attacks = ["clean", "pgd2"]
    # The one step rule (the command's too): given, else the paper's for `dataset`, else
    # epsilon / 4 -- not the model's training step (0.1 here); pgd2 cannot reach epsilon: warned.
    with pytest.warns(UserWarning, match=r"^pgd2: 2 steps x step 0.075 = 0.15 < epsilon 0.3"):
        record = aalp_tf.evaluate_model(model, (X, Y), attacks=attacks, batch_size=32,
                                        check_examples=16)
    assert capsys.readouterr().out == ""
    assert record["examples"] == 64 and (record["epsilon"], record["step_size"]) == (0.3, 0.075)
    assert record["warnings"][0].startswith("pgd2: 2 steps")
    assert list(record["accuracy"]) == attacks and record["checks"]["examples"] == 16
    batches = [(X[:32], Y[:32]), (X[32:], Y[32:])]
    same = {
        "dataset": aalp_tf.evaluate_model(model, tf.data.Dataset.from_tensor_slices((X, Y)).batch(32),
                                    attacks=attacks, checks=False),
        "list of batches": aalp_tf.evaluate_model(model, batches, attacks=attacks, checks=False),
        "function": aalp_tf.evaluate_model(model.inference_logits, batches, attacks=attacks,
                                     epsilon=0.3, step_size=0.075, checks=False),
        "SavedModel": aalp_tf.evaluate_model(str(path), batches, attacks=attacks, epsilon=0.3,
                                       step_size=0.075, checks=False),
    }
    for name, other in same.items():
        assert other["accuracy"] == record["accuracy"], name
    with pytest.raises(ValueError) as err:
        aalp_tf.evaluate_model(model.inference_logits, batches, attacks=attacks)
    assert str(err.value) == ("Invalid value received for argument `epsilon`. Expected a float "
                              "in (0, 1] (pixel units): only a `dataset` with paper settings or an "
                              "AdversarialModel brings its own. "
                              "Received: epsilon=None")
    with pytest.raises(ValueError, match=re.escape("Received: images of dtype uint8")):
        aalp_tf.evaluate_model(model, (X_UINT8, Y), attacks=attacks)


# ---- the README's examples -------------------------------------------------------------------


@pytest.fixture
def registry_restored(monkeypatch):
    """Methods a test registers are gone after it."""
    monkeypatch.setattr(METHODS, "_items", dict(METHODS._items))


def tiny_cifar():
    """CIFAR-10's load_data() on tiny data: uint8 [N, 32, 32, 3] images, labels [N, 1]."""
    x, y = digit_like_images(128, seed=4)
    x = np.repeat(np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0))), 3, axis=-1)
    return (x[:96], y[:96, None]), (x[96:], y[96:, None])


def test_the_readme_library_example_runs(tmp_path, monkeypatch):
    data, example = python_blocks("## Use it as a library")[:2]
    monkeypatch.setattr(keras.datasets.cifar10, "load_data", tiny_cifar)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(shrunk(data, {"x[:-1000], y[:-1000]": "x[:-32], y[:-32]",
                       "x[-1000:], y[-1000:]": "x[-32:], y[-32:]"}), namespace)
    exec(shrunk(example, {"epochs=30": "epochs=2", '"autoattack"]': '"aa-lite20"]'}),
         namespace)
    assert set(namespace["results"]["accuracy"]) == {"clean", "pgd40", "aa-lite20"}
    assert namespace["results"]["examples"] == 32
    assert (tmp_path / "best.keras").is_file() and (tmp_path / "last.keras").is_file()
    assert (tmp_path / "saved_models/my_model/1/saved_model.pb").is_file()


def mart_by_hand(clean, adv, labels, alpha):
    p_clean, p_adv = (np.exp(z) / np.exp(z).sum(-1, keepdims=True) for z in (clean, adv))
    rows = np.arange(len(labels))
    other = np.where(np.eye(clean.shape[1])[labels] == 1, 0, p_adv).max(-1)
    bce = -np.log(p_adv[rows, labels]) - np.log(1.0001 - other)
    kl = (p_clean * (np.log(p_clean) - np.log(p_adv))).sum(-1)
    return bce + alpha * kl * (1 - p_clean[rows, labels])


def test_the_readme_method_example_is_mart_and_trains(registry_restored):
    (code,) = python_blocks("### Your own method")
    assert len(code.strip().splitlines()) < 20
    exec(code, {})
    method = METHODS.get("mart")
    assert (method.branches, method.adversary, method.uses_alpha) == (("clean", "adv"), "ce",
                                                                      True)
    rng = np.random.default_rng(0)
    clean, adv = rng.normal(size=(2, 6, 4)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 0, 1])
    per_example, logs = method.loss(logits={"clean": clean, "adv": adv}, labels=labels,
                                    cfg=MethodConfig(name="mart", alpha=6.0))
    np.testing.assert_allclose(per_example, mart_by_hand(clean, adv, labels, 6.0), rtol=1e-5)
    assert set(logs) == {"bce", "kl"}
    model = adversarial_model("mart", alpha=6.0)
    logs = model.train_on_batch(X[:32], Y[:32], return_dict=True)
    assert np.isfinite(logs["loss"]) and {"bce", "kl"} <= set(logs)
    search = TuneConfig(run=tiny_config("unused", "mart"))
    search_space.check_searchable(search)  # the tuner searches its alpha
    assert search_space.trial_config(search, {"alpha": 2.5}).method.alpha == 2.5


def test_a_method_registered_twice_or_with_a_wrong_branch_is_refused(registry_restored):
    with pytest.raises(ValueError) as err:
        aalp_tf.register_method("alp")(lambda **_: None)
    assert str(err.value).startswith("method 'alp' is already registered; accepted: a new name")
    with pytest.raises(ValueError) as err:
        aalp_tf.register_method("x", branches=("clean",), adversary="ce")(lambda **_: None)
    assert str(err.value) == ("Invalid value received for argument `adversary`. Expected None "
                              "with branches=('clean',). Received: adversary='ce'")
    assert "x" not in METHODS
