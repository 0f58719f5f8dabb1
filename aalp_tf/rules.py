"""Rules for settings: what a setting accepts, checked in one place and said in one style.

A rule refuses a value in one line, naming the setting as the commands' flag: "--epsilon must be
in (0, 1] (pixel units, e.g. 0.3 or 8/255); received: 2.0". The Python API shares the names
(--epsilon is epsilon=), and inside `keyword_arguments()` the same rule says "epsilon must be
...". The configs (config.py) hold the rules of their fields.
"""
import contextlib
import dataclasses
import math
import numbers
from typing import Any, Callable, Optional

from aalp_tf.errors import UsageError


class SettingError(UsageError):
    """A setting outside what it accepts: "--NAME must be ACCEPTED; received: VALUE".

    Settings are named as the commands' flags; `as_argument()` names them as the keyword
    arguments of the Python API, which share the names (--epsilon is epsilon=).
    """

    def __init__(self, setting: str, accepted: str, received: str):
        super().__init__(f"--{setting} must be {accepted}; received: {received}")
        self.setting, self.accepted, self.received = setting, accepted, received

    def as_argument(self) -> "SettingError":
        error = SettingError(self.setting, self.accepted, self.received)
        accepted = self.accepted.replace("--", "")  # our own text: flags it names become names
        error.args = (f"{self.setting} must be {accepted}; received: {self.received}",)
        return error


@contextlib.contextmanager
def keyword_arguments():
    """Inside it, a SettingError names the setting as a keyword argument (epsilon=, not
    --epsilon): for checks of the Python API's arguments."""
    try:
        yield
    except SettingError as err:
        raise err.as_argument() from None


INT32_MAX = 2 ** 31 - 1  # counts and steps become int32 tensors; a run's seed numpy's uint32


def _shown(value) -> str:
    return repr(value) if isinstance(value, str) else str(value)


@dataclasses.dataclass(frozen=True)
class Rule:
    """A setting accepts the values for which `test` holds; `accepted` says which, in words."""

    setting: str  # the flag (--setting) and the keyword argument of the Python API
    accepted: str  # completes "--setting must be ...", e.g. "in (0, 1]", "an integer >= 1"
    test: Callable[[Any], bool]

    def check(self, value) -> None:
        # absl's integer flags take any size, and a larger one would fail deep inside
        # TensorFlow or numpy: every integer setting fits in int32.
        if is_integer(value) and abs(value) > INT32_MAX:
            raise SettingError(self.setting, f"at most {INT32_MAX} in size", _shown(value))
        if not self.test(value):
            raise SettingError(self.setting, self.accepted, _shown(value))


def finite(value) -> bool:
    """A real number, not NaN or ±inf. (A range check alone lets NaN through wherever it is
    written as a negation, since every comparison with NaN is False.)"""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def is_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def number(setting: str, low: float, high: float, *, open_low: bool = False,
           suffix: str = "") -> Rule:
    """A finite real number in [low, high], or (low, high] with `open_low`."""
    interval = f"{'(' if open_low else '['}{low:g}, {high:g}]"
    return Rule(setting, f"in {interval}{suffix}", lambda v: finite(v) and (
        low < v if open_low else low <= v) and v <= high)


def integer(setting: str, low: int, suffix: str = "") -> Rule:
    """An integer >= low (bools are not integers here)."""
    return Rule(setting, f"an integer >= {low}{suffix}", lambda v: is_integer(v) and v >= low)


def one_of(setting: str, choices) -> Rule:
    return Rule(setting, f"one of {', '.join(choices)}", lambda v: v in choices)


def number_from_text(text: str) -> float:
    """A number written as a decimal or as a fraction: "0.3", "1e-5", "8/255" (pixel units as
    the papers write them); ValueError otherwise. A fraction is the float division, so "8/255"
    is exactly 8 / 255. (For the commands' float flags: absl's parser takes decimals only.)"""
    numerator, slash, denominator = text.partition("/")
    if not slash:
        return float(text)
    try:
        return float(numerator) / float(denominator)
    except ZeroDivisionError:
        raise ValueError(f"{text!r} divides by zero") from None


def check(condition: bool, message: str) -> None:
    """Raises UsageError(message) unless condition holds: for one-line input checks."""
    if not condition:
        raise UsageError(message)


def check_range(name: str, bounds, *, high_max: Optional[float] = None, top=None) -> None:
    """LOW,HIGH with 0 < LOW < HIGH (<= high_max); `top`: (flag, bound) HIGH may not exceed,
    the bound of the flag the range searches."""
    check(bounds is not None and len(bounds) == 2 and 0 < bounds[0] < bounds[1]
          and (high_max is None or bounds[1] <= high_max),
          f"--{name} must be LOW,HIGH with 0 < LOW < HIGH"
          f"{'' if high_max is None else f' <= {high_max}'}; received: {bounds}")
    if top is not None:
        flag, bound = top
        check(finite(bounds[1]) and bounds[1] <= bound, f"--{name}'s HIGH must be at most "
              f"{bound:g}, the largest {flag}; received: {bounds}")


# ---- the rules of settings the commands and the Python API share ---------------------------
# The configs check them when constructed (config.py); AdversarialModel and GuidedDropout check
# their keyword arguments with them.
# Upper bounds of settings that have no natural one. absl's float flags accept `inf` and `nan`,
# and a finite but absurd value trains as badly: --alpha=1e30 turns the loss to NaN in the first
# epoch, as --alpha=inf does. Each bound sits far above any sensible value.
MAX_LOSS_WEIGHT = 1000.0  # --alpha, --trades_beta: 1000x the paper's α = 1, 100x the tuner's
#                           default range; at 1000 the cross-entropy is already ~1% of the loss
MAX_LEARNING_RATE = 1.0  # Adam moves every weight by about the rate at every step
MAX_TIMEOUT = 3600.0  # seconds a Predict request may wait
# The L-inf ball of radius 1 around an image in [0, 1] holds every image: a larger epsilon means
# nothing. (Another norm's bound differs, e.g. L2's: make this a rule per norm.)
EPSILON = number("epsilon", 0, 1, open_low=True, suffix=" (pixel units, e.g. 0.3 or 8/255)")
STEP_SIZE = number("step_size", 0, 1, open_low=True)
# The L2 ball's radius is in pixel units of the whole image: sqrt(H*W*C) spans [0, 1]^d, 55 for
# CIFAR-10 and 28 for MNIST; the configs do not know the image, so 100 bounds every dataset we
# read while refusing nonsense (inf, 1e9).
MAX_L2_EPSILON = 100.0
NORMS = ("l2", "linf")  # attacks.THREAT_MODELS: the projection and step of each
NORM = one_of("norm", NORMS)
EPSILONS = {"linf": EPSILON, "l2": number(
    "epsilon", 0, MAX_L2_EPSILON, open_low=True,
    suffix=" for --norm=l2 (pixel units of the whole image, e.g. 0.5 on CIFAR-10, 2 on MNIST)")}
STEP_SIZES = {"linf": STEP_SIZE, "l2": number("step_size", 0, MAX_L2_EPSILON, open_low=True,
                                              suffix=" for --norm=l2")}
ATTACK_STEPS = integer("attack_steps", 1)
ALPHA = number("alpha", 0, MAX_LOSS_WEIGHT)
TRADES_BETA = number("trades_beta", 0, MAX_LOSS_WEIGHT)
KEEP_FRACTION = number("keep_fraction", 0, 1, open_low=True)
SEED = integer("seed", 0)
VAL_ATTACK_STEPS = integer("val_attack_steps", 0, " (0: --attack_steps)")
# Single-step adversaries (adversaries.py) and schedules (schedules.py) are fixed sets, not
# registries a user extends: their names are the schema of the configs.
ADVERSARIES = ("fgsm_rs", "n_fgsm", "pgd")
LR_SCHEDULES = ("constant", "cyclic", "piecewise")
ADVERSARY = one_of("adversary", ADVERSARIES)
LR_SCHEDULE = one_of("lr_schedule", LR_SCHEDULES)
# AWP's gamma is relative to each weight's norm: 1 would move a layer by its own size.
AWP_GAMMA = Rule("awp_gamma", "in [0, 1) (0: off; the paper's 5e-3 to 1e-2)",
                 lambda v: finite(v) and 0 <= v < 1)
