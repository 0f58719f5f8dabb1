import numpy as np
import pytest

from aalp_tf.config import MethodConfig
from aalp_tf.errors import UsageError
from aalp_tf.methods import ADV, CLEAN, METHODS

CLEAN_Z = np.array([[2.0, 1.0, 0.0], [0.5, 0.5, 3.0]], np.float32)
ADV_Z = np.array([[0.0, 2.0, 1.0], [1.0, 0.0, 2.0]], np.float32)
LABELS = np.array([0, 2])
CFG = MethodConfig(name="x", alpha=0.7, trades_beta=6.0)


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def ce(z):
    return -np.log(softmax(z)[[0, 1], LABELS])


ALP = np.array([6.0, 1.5])  # ||CLEAN_Z - ADV_Z||^2 per row
P_TRUE = softmax(CLEAN_Z)[[0, 1], LABELS]
KL = (softmax(CLEAN_Z) * (np.log(softmax(CLEAN_Z)) - np.log(softmax(ADV_Z)))).sum(-1)

EXPECTED = {
    "natural": ce(CLEAN_Z),
    "madry": ce(ADV_Z),
    "alp": 0.5 * (ce(CLEAN_Z) + ce(ADV_Z)) + 0.7 * ALP,
    "aalp_gd": 0.5 * (ce(CLEAN_Z) + ce(ADV_Z)) + 0.7 * ALP,
    "aalp_sw": 0.5 * (ce(CLEAN_Z) + ce(ADV_Z)) + 0.7 * P_TRUE * ALP,
    "aalp": 0.5 * (ce(CLEAN_Z) + ce(ADV_Z)) + 0.7 * P_TRUE * ALP,
    "trades": ce(CLEAN_Z) + 6.0 * KL,
}


def test_every_method_of_the_paper_is_registered():
    assert set(METHODS.names()) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_method_loss_by_hand(name):
    method = METHODS.get(name)
    logits = {CLEAN: CLEAN_Z, ADV: ADV_Z}
    per_example, logs = method.loss(logits={b: logits[b] for b in method.branches},
                                    labels=LABELS, cfg=CFG)
    np.testing.assert_allclose(per_example, EXPECTED[name], rtol=1e-5)
    assert set(logs) == set(method.logs)
    assert all(np.shape(v) == (2,) for v in logs.values())


@pytest.mark.parametrize("name,gd", [("aalp", True), ("aalp_gd", True), ("aalp_sw", False),
                                     ("alp", False), ("madry", False)])
def test_guided_dropout_belongs_to_the_aalp_gd_methods(name, gd):
    assert METHODS.get(name).guided_dropout is gd


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(UsageError) as err:
        METHODS.get("alpp")
    assert str(err.value) == ("unknown method: received 'alpp'; accepted: aalp, aalp_gd, "
                              "aalp_sw, alp, madry, natural, trades")
