"""The learning-rate schedule of a run: constant (the paper's), one-cycle, or piecewise decay.

Each is a Keras schedule over the run's optimizer steps (epochs × steps per epoch), so it
follows `optimizer.iterations`, which the checkpoint keeps: a resumed run goes on where it
stopped. The schedule is laid out for the configured number of epochs; a run continued with more
epochs lays it out again over the longer run.

- constant: `--learning_rate` throughout (the float itself, as before schedules existed).
- cyclic: the one-cycle schedule of the fast-training papers (Wong et al. 2020, Smith & Topin
  2018): linear from 0 up to `--learning_rate` at 2/5 of the steps (Wong et al.'s MNIST
  schedule), then linearly back to 0 at the last step.
- piecewise: `--learning_rate`, ×0.1 after 50% and again after 75% of the steps (Madry et al.,
  Rice et al.).
"""
import keras

from aalp_tf import rules
from aalp_tf.errors import invalid_argument

SCHEDULES = rules.LR_SCHEDULES
CYCLE_PEAK = 0.4  # share of the steps at which the one cycle peaks
DECAY_POINTS = (0.5, 0.75)  # shares of the steps after which piecewise multiplies by DECAY
DECAY = 0.1


@keras.saving.register_keras_serializable(package="aalp_tf")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """Piecewise linear: 0 -> `max_rate` at `peak` of `total_steps`, then -> 0 at the end.

    Step s (0-based, as `optimizer.iterations` counts) gets the rate at s + 1, as Wong et al.
    evaluate it after each iteration: the first update is not a zero one.
    """

    def __init__(self, max_rate, total_steps, peak=CYCLE_PEAK):
        super().__init__()
        if not (isinstance(total_steps, int) and total_steps >= 1):
            raise invalid_argument("total_steps", "an integer >= 1",
                                   f"total_steps={total_steps!r}")
        self.max_rate, self.total_steps, self.peak = float(max_rate), total_steps, float(peak)
        self.peak_step = max(1.0, round(self.peak * total_steps))

    def __call__(self, step):
        t = keras.ops.cast(step, "float32") + 1.0
        up = self.max_rate * t / self.peak_step
        down = self.max_rate * (self.total_steps - t) / max(1.0, self.total_steps -
                                                            self.peak_step)
        return keras.ops.maximum(keras.ops.where(t <= self.peak_step, up, down), 0.0)

    def get_config(self):
        return {"max_rate": self.max_rate, "total_steps": self.total_steps, "peak": self.peak}


def piecewise(rate: float, total_steps: int):
    """`rate`, then ×DECAY after each of DECAY_POINTS (shares of `total_steps`)."""
    boundaries = [max(1, round(point * total_steps)) for point in DECAY_POINTS]
    values = [rate * DECAY ** i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def learning_rate(train, *, steps_per_epoch: int):
    """The optimizer's `learning_rate` for a TrainConfig: the float for "constant", else a
    schedule over train.epochs × steps_per_epoch steps. Without steps (0: a model rebuilt for
    inference, export or analysis, which never steps) every schedule is the constant rate.
    """
    name, rate = train.lr_schedule, train.learning_rate
    total = int(train.epochs) * int(steps_per_epoch)
    if name == "constant" or total <= 0:
        return rate
    if name == "cyclic":
        return OneCycle(rate, total)
    return piecewise(rate, total)
