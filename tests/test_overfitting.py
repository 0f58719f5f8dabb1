"""The catastrophic-overfitting guard (aalp_tf/overfitting.py): the rule on synthetic
histories, the best-epoch export it implies, and its callback in a real fit forced to collapse."""
import keras
import numpy as np
import pytest

from aalp_tf import overfitting
from aalp_tf.runs import export_choice
from aalp_tf.trainer import AdversarialModel


def history(robust, adv):
    return [{"epoch": e, "val_robust_accuracy": r, "adv_accuracy": a, "val_clean_accuracy": 0.9}
            for e, (r, a) in enumerate(zip(robust, adv), start=1)]


def test_a_collapse_is_robustness_halving_while_the_training_adversary_is_beaten():
    h = history([0.30, 0.60, 0.70, 0.05, 0.10], [0.3, 0.5, 0.6, 0.9, 0.95])
    assert overfitting.collapsed_epochs(h) == [4, 5]
    assert [e["epoch"] for e in overfitting.before_collapse(h)] == [1, 2, 3]
    assert overfitting.collapses(h)[0].describe() == (
        "catastrophic overfitting at epoch 4: val_robust_accuracy 0.0500 < 0.5 x its best "
        "0.7000 (epoch 3) while adv_accuracy rose 0.6000 -> 0.9000")
    assert overfitting.export_note(h).endswith(": epochs 4-5 were not candidates")


@pytest.mark.parametrize("robust,adv", [
    ([0.6, 0.2], [0.6, 0.3]),  # robustness and adversarial accuracy fall together: divergence
    ([0.15, 0.01], [0.2, 0.9]),  # never robust: nothing to collapse from
    ([0.6, 0.31], [0.6, 0.9]),  # fell, but by less than half
    ([0.6, 0.7, 0.8], [0.5, 0.6, 0.7]),  # an ordinary run
])
def test_no_collapse(robust, adv):
    h = history(robust, adv)
    assert overfitting.collapsed_epochs(h) == []
    assert overfitting.before_collapse(h) == h
    assert overfitting.export_note(h) == ""


def test_the_best_epoch_export_skips_epochs_after_a_collapse():
    """After a collapse, PGD-10 on the validation slice may rate the masked model highly: with
    the guard (export_choice over before_collapse), the best epoch is one before it."""
    h = history([0.5, 0.1, 0.9], [0.5, 0.9, 0.95])
    assert overfitting.collapsed_epochs(h) == [2] and max(
        h, key=lambda e: e["val_robust_accuracy"])["epoch"] == 3  # unguarded: epoch 3
    epoch, reason = export_choice(h, "best")
    assert epoch == 1 and reason.endswith("were not candidates")


class ForceCollapse(keras.callbacks.Callback):
    """From epoch `at` on, the logs read as a collapsed run's: PGD accuracy 0, adversary beaten."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 >= self.at:
            logs.update(val_robust_accuracy=0.0, adv_accuracy=1.0)


def tiny_fit(callbacks, epochs=4):
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                                 keras.layers.Dense(8, activation="relu")])
    model = AdversarialModel(backbone, 2, epsilon=0.1, step_size=0.05, attack_steps=1,
                             method="alp", adversary="fgsm_rs")
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 64)
    x = np.clip(rng.random((64, 4, 4, 1)) * 0.2 + 0.7 * y[:, None, None, None], 0, 1)
    return model.fit(x.astype("float32"), y, validation_data=(x[:32].astype("float32"), y[:32]),
                     epochs=epochs, batch_size=32, callbacks=callbacks, verbose=0)


def test_the_callback_says_so_in_one_line_and_can_stop_the_run(capsys):
    guard = overfitting.CollapseGuard(stop=True)
    fit = tiny_fit([ForceCollapse(at=3), guard])
    lines = [line for line in capsys.readouterr().out.splitlines() if "catastrophic" in line]
    assert len(lines) == 1, lines
    assert lines[0].startswith("catastrophic overfitting at epoch 3: val_robust_accuracy 0.0000")
    assert lines[0].endswith("--export_epoch=best exports an epoch before 3; training stops here")
    assert len(fit.history["loss"]) == 3  # stopped after the collapsed epoch
    assert guard.collapse.epoch == 3
    assert [e["epoch"] for e in overfitting.before_collapse(guard.history)] == [1, 2]


def test_a_run_that_does_not_collapse_prints_nothing_and_a_resumed_guard_knows_the_past(capsys):
    guard = overfitting.CollapseGuard()
    tiny_fit([guard], epochs=2)
    assert "catastrophic" not in capsys.readouterr().out and guard.collapse is None
    earlier = history([0.8, 0.85], [0.5, 0.6])
    resumed = overfitting.CollapseGuard(history=earlier)
    resumed.on_epoch_end(2, {"val_robust_accuracy": 0.1, "adv_accuracy": 0.9})
    assert resumed.collapse.epoch == 3 and resumed.collapse.best_epoch == 2
