"""rules.py: one rule per setting, one message style, named as a flag or as a keyword argument."""
import numpy as np
import pytest

from aalp_tf import rules
from aalp_tf.errors import UsageError


def message(rule, value, *, as_argument=False) -> str:
    with pytest.raises(rules.SettingError) as err:
        if as_argument:
            with rules.keyword_arguments():
                rule.check(value)
        else:
            rule.check(value)
    return str(err.value)


def test_a_rule_names_the_setting_as_a_flag_or_as_a_keyword_argument():
    assert message(rules.EPSILON, 2.0) == ("--epsilon must be in (0, 1] (pixel units, e.g. 0.3 "
                                           "or 8/255); received: 2.0")
    assert message(rules.EPSILON, 2.0, as_argument=True) == (
        "epsilon must be in (0, 1] (pixel units, e.g. 0.3 or 8/255); received: 2.0")
    # Flags named in what is accepted are named as arguments too.
    assert message(rules.VAL_ATTACK_STEPS, -1, as_argument=True) == (
        "val_attack_steps must be an integer >= 0 (0: attack_steps); received: -1")


def test_a_setting_error_is_the_usage_error_commands_print_and_a_value_error():
    with pytest.raises(UsageError):
        rules.SEED.check(-1)
    with pytest.raises(ValueError):
        with rules.keyword_arguments():
            rules.SEED.check(-1)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 0, 0.0, 1.0001,
                                   True, "0.3", None])
def test_a_number_rule_refuses_non_finite_out_of_range_and_non_numbers(value):
    with pytest.raises(rules.SettingError):
        rules.EPSILON.check(value)


@pytest.mark.parametrize("value", [1, 1.0, 8 / 255, np.float32(0.3)])
def test_a_number_rule_accepts_its_range_closed_at_the_top(value):
    rules.EPSILON.check(value)


@pytest.mark.parametrize("value,shown", [(0, "0"), (2.5, "2.5"), (True, "True"), ("3", "'3'")])
def test_an_integer_rule_refuses_what_is_not_an_integer_in_range(value, shown):
    assert message(rules.ATTACK_STEPS, value) == (
        f"--attack_steps must be an integer >= 1; received: {shown}")


def test_every_integer_fits_in_int32():
    assert message(rules.SEED, 2 ** 31) == ("--seed must be at most 2147483647 in size; "
                                            "received: 2147483648")
    rules.SEED.check(np.int64(2 ** 31 - 1))


def test_one_of_and_ranges():
    assert message(rules.one_of("export_epoch", ("best", "last")), "first") == (
        "--export_epoch must be one of best, last; received: 'first'")
    with pytest.raises(UsageError) as err:
        rules.check_range("alpha_range", (2.0, 1.0))
    assert str(err.value) == ("--alpha_range must be LOW,HIGH with 0 < LOW < HIGH; received: "
                              "(2.0, 1.0)")


@pytest.mark.parametrize("text,value", [("0.3", 0.3), ("8/255", 8 / 255), ("2/255", 2 / 255),
                                        ("1e-5", 1e-5), (" 8 / 255 ", 8 / 255)])
def test_a_number_may_be_written_as_a_fraction(text, value):
    assert rules.number_from_text(text) == value  # exactly: the same division


@pytest.mark.parametrize("text", ["8/", "/255", "8/255/2", "eight", "1/0"])
def test_what_is_not_a_number_is_a_value_error(text):
    with pytest.raises(ValueError):
        rules.number_from_text(text)
