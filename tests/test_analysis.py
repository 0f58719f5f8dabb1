"""Eq. 5, Eq. 6 and the consistent/inconsistent split against hand computations."""
import keras
import numpy as np
import pytest

from aalp_tf.analysis import probes, quantities
from aalp_tf.errors import UsageError
from aalp_tf.trainer import AdversarialModel

N, CLASSES = 5, 3


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.fixture(scope="module")
def tiny():
    """A 3x3 image -> 1x1 conv (2 ch, ReLU) -> flatten -> dense 4 (ReLU) = A_fc -> 3 logits."""
    rng = np.random.default_rng(0)
    inputs = keras.Input((3, 3, 1))
    h = keras.layers.Conv2D(2, 1, activation="relu", name="conv")(inputs)
    h = keras.layers.Flatten(name="flatten")(h)
    features = keras.layers.Dense(4, activation="relu", name="fc")(h)
    model = AdversarialModel(keras.Model(inputs, features), num_classes=CLASSES,
                             method="natural", epsilon=0.3, step_size=0.1, attack_steps=1)
    model(np.zeros((1, 3, 3, 1), np.float32))
    w = {"k": np.array([[[[1.0, -0.5]]]], np.float32), "kb": np.array([0.1, 0.2], np.float32),
         "w1": rng.normal(size=(18, 4)).astype(np.float32),
         "b1": np.array([0.1, -0.1, 0.2, 0.0], np.float32),
         "w2": rng.normal(size=(4, CLASSES)).astype(np.float32),
         "b2": np.array([0.0, 0.1, -0.1], np.float32)}
    model.backbone.get_layer("conv").set_weights([w["k"], w["kb"]])
    model.backbone.get_layer("fc").set_weights([w["w1"], w["b1"]])
    model.classifier.set_weights([w["w2"], w["b2"]])
    x = rng.uniform(size=(N, 3, 3, 1)).astype(np.float32) * 2 - 0.5  # some conv units off
    y = np.array([0, 1, 2, 1, 0])
    return model, w, x, y


def reference(w, x, y):
    """NumPy forward and backward pass of the tiny model's cross-entropy."""
    conv = np.maximum(x * w["k"][0, 0, 0] + w["kb"], 0)  # [N, 3, 3, 2]
    pre = conv.reshape(N, -1) @ w["w1"] + w["b1"]
    a_fc = np.maximum(pre, 0)
    dz = softmax(a_fc @ w["w2"] + w["b2"]) - np.eye(CLASSES)[y]  # dCE/dlogits
    d_fc = dz @ w["w2"].T
    d_conv = ((d_fc * (pre > 0)) @ w["w1"].T).reshape(conv.shape)
    return conv, d_fc, d_conv


def test_eq5_contribution_matches_numpy(tiny):
    model, w, x, y = tiny
    _, d_fc, _ = reference(w, x, y)
    grads = probes.feature_gradients(model, x, y, batch_size=2)  # 3 batches
    np.testing.assert_allclose(grads, d_fc, rtol=1e-5, atol=1e-6)
    c = quantities.contribution(feature_gradients=grads).numpy()
    np.testing.assert_allclose(c, np.abs(d_fc).mean(axis=0), rtol=1e-5, atol=1e-7)
    assert c.shape == (4,)


def test_eq6_grad_cam_matches_numpy(tiny):
    model, w, x, y = tiny
    conv, _, d_conv = reference(w, x, y)
    acts, grads = probes.layer_gradients(model, "conv", x, y, batch_size=2)
    np.testing.assert_allclose(acts, conv, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads, d_conv, rtol=1e-5, atol=1e-6)
    cam = quantities.grad_cam(gradients=grads, activations=acts).numpy()
    np.testing.assert_allclose(cam, np.maximum(d_conv * conv, 0).sum(-1), rtol=1e-5, atol=1e-6)
    assert cam.shape == (N, 3, 3) and cam.min() >= 0


def test_grad_cam_applies_relu_per_channel_before_the_sum():
    cam = quantities.grad_cam(gradients=np.array([[[[1.0, -1.0]]]]),
                            activations=np.array([[[[2.0, 3.0]]]]))
    assert cam.numpy().tolist() == [[[2.0]]]  # relu(2) + relu(-3); relu(2 - 3) would be 0


def test_upsampled_maps_peak_at_one_and_a_zero_map_stays_zero():
    maps = np.stack([np.arange(4.0).reshape(2, 2), np.zeros((2, 2))])
    up = quantities.upsample_maps(maps=maps, size=(6, 6)).numpy()
    assert up.shape == (2, 6, 6)
    assert up[0].max() == pytest.approx(1.0) and up[1].max() == 0.0


def test_the_cam_layer_defaults_to_the_last_spatial_layer_and_rejects_others(tiny):
    model = tiny[0]
    assert probes.cam_layer_names(model.backbone) == ["conv"]
    assert probes.resolve_cam_layer(model.backbone) == "conv"
    with pytest.raises(UsageError) as err:
        probes.resolve_cam_layer(model.backbone, "fc")
    assert str(err.value) == (f"--cam_layer: {model.backbone.name} has no spatial layer 'fc'; "
                              "accepted: conv")


def test_hot_area_is_the_share_of_pixels_at_half_the_maximum_or_more():
    maps = np.zeros((2, 2, 2))
    maps[0, 0, 0], maps[0, 0, 1], maps[0, 1, 0] = 1.0, 0.5, 0.49
    assert quantities.hot_area(maps=maps).tolist() == [0.5, 0.0]


# clean right/adv right, clean right/adv wrong, clean wrong/adv right, both wrong (label 0)
CLEAN = np.array([[2.0, 0.0], [2.0, 0.0], [0.0, 2.0], [0.0, 2.0]])
ADV = np.array([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 2.0]])
LABELS = np.zeros(4, np.int64)


def hand_measures():
    return quantities.per_example_measures(clean_logits=CLEAN, adv_logits=ADV, labels=LABELS)


def test_the_set_split_is_exact_on_a_hand_made_case():
    m = hand_measures()
    assert m["clean_correct"].tolist() == [True, True, False, False]
    assert m["adv_correct"].tolist() == [True, False, True, False]
    consistent, inconsistent = quantities.consistency_split(clean_correct=m["clean_correct"],
                                                          adv_correct=m["adv_correct"])
    assert consistent.tolist() == [True, False, False, False]
    assert inconsistent.tolist() == [False, True, False, False]  # clean wrong: in neither


def test_set_statistics_hold_the_hand_computed_means():
    stats = quantities.set_statistics(measures=hand_measures())
    high, low = 1 / (1 + np.exp(-2.0)), 1 / (1 + np.exp(2.0))  # softmax of (2, 0), (0, 2)
    assert stats["examples"] == 4
    assert stats["clean_accuracy"] == 0.5 and stats["adv_accuracy"] == 0.5
    c, i = stats["consistent"], stats["inconsistent"]
    assert (c["count"], c["share"], i["count"], i["share"]) == (1, 0.25, 1, 0.25)
    assert c["p_clean"] == pytest.approx(high) and c["p_adv"] == pytest.approx(high)
    assert i["p_clean"] == pytest.approx(high) and i["p_adv"] == pytest.approx(low)
    assert c["alp"] == 0.0 and i["alp"] == pytest.approx(8.0)  # ||(2,0) - (0,2)||^2
    assert i["ce_adv"] == pytest.approx(-np.log(low), rel=1e-5)
    assert i["classification_loss"] == pytest.approx(0.5 * (i["ce_clean"] + i["ce_adv"]))


def test_an_empty_set_has_no_means():
    m = quantities.per_example_measures(clean_logits=CLEAN[:1], adv_logits=ADV[:1],
                                      labels=LABELS[:1])
    row = quantities.set_statistics(measures=m)["inconsistent"]
    assert row["count"] == 0 and row["share"] == 0.0 and row["alp"] is None


def test_set_curves_split_by_the_last_epoch_or_by_each_epoch():
    first = {"clean_correct": [True, True], "adv_correct": [False, True], "alp": [4.0, 1.0]}
    last = {"clean_correct": [True, True], "adv_correct": [True, False], "alp": [2.0, 3.0]}
    records = [{"epoch": 1, "measures": first}, {"epoch": 2, "measures": last}]
    fixed = quantities.set_means_over_time(records=records)
    assert fixed == {"epoch": [1, 2], "consistent": [4.0, 2.0], "inconsistent": [1.0, 3.0]}
    own = quantities.set_means_over_time(records=records, fixed_by_last=False)
    assert own == {"epoch": [1, 2], "consistent": [1.0, 2.0], "inconsistent": [4.0, 3.0]}
