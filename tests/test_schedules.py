"""Learning-rate schedules (aalp_tf/schedules.py): constant is the float itself, the one cycle
and the piecewise decay at exact steps, and the model's optimizer follows them."""
import dataclasses

import keras
import numpy as np
import pytest

from aalp_tf import schedules
from aalp_tf.data.datasets import DATASETS
from aalp_tf.trainer import build_model
from tests.helpers.tiny import tiny_config

SPEC = DATASETS.get("mnist")


def train_config(name, epochs=2, rate=1e-3):
    cfg = tiny_config("/tmp/unused", "alp", epochs=epochs).train
    return dataclasses.replace(cfg, lr_schedule=name, learning_rate=rate)


def rates(schedule, steps):
    return [float(schedule(step)) for step in range(steps)]


def test_constant_is_the_learning_rate_itself():
    assert schedules.learning_rate(train_config("constant"), steps_per_epoch=5) == 1e-3


def test_the_one_cycle_rises_to_the_rate_at_two_fifths_then_falls_to_zero():
    schedule = schedules.learning_rate(train_config("cyclic", epochs=2, rate=1.0),
                                       steps_per_epoch=5)
    assert isinstance(schedule, schedules.OneCycle)
    # 10 steps, peak at step 4 (counting from 1, as after each iteration)
    np.testing.assert_allclose(rates(schedule, 10), [0.25, 0.5, 0.75, 1.0, 5 / 6, 4 / 6, 3 / 6,
                                                     2 / 6, 1 / 6, 0.0], rtol=1e-6, atol=1e-7)


def test_piecewise_decays_by_ten_after_half_and_three_quarters_of_the_steps():
    schedule = schedules.learning_rate(train_config("piecewise", epochs=2, rate=1.0),
                                       steps_per_epoch=4)
    np.testing.assert_allclose(rates(schedule, 8), [1, 1, 1, 1, 1, 0.1, 0.1, 0.01], rtol=1e-6)


def test_without_steps_every_schedule_is_the_constant_rate():
    for name in schedules.SCHEDULES:
        assert schedules.learning_rate(train_config(name), steps_per_epoch=0) == 1e-3


def test_an_unknown_schedule_is_refused():
    with pytest.raises(ValueError) as err:
        train_config("cosine")
    assert str(err.value) == ("--lr_schedule must be one of constant, cyclic, piecewise; "
                              "received: 'cosine'")


def test_the_one_cycle_serializes_as_keras_schedules_do():
    schedule = schedules.OneCycle(0.1, 20)
    again = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert rates(again, 20) == rates(schedule, 20)


def test_the_models_optimizer_follows_the_schedule(tmp_path):
    cfg = tiny_config(tmp_path / "run", "alp", epochs=2)
    cfg = cfg.replace(train=dataclasses.replace(cfg.train, lr_schedule="cyclic"))
    model = build_model(cfg, SPEC, steps_per_epoch=5)
    seen = []
    for step in (0, 3, 9):
        model.optimizer.iterations.assign(step)
        seen.append(float(model.optimizer.learning_rate))
    np.testing.assert_allclose(seen, [0.25e-3, 1e-3, 0.0], rtol=1e-6, atol=1e-9)
    assert isinstance(build_model(cfg, SPEC).optimizer.learning_rate.numpy(), np.floating)
