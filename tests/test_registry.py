"""registry.py: a name registered once, and a miss that lists the names known."""
import pytest

from aalp_tf.errors import UsageError
from aalp_tf.registry import Registry


def colours() -> Registry:
    registry = Registry("colour")
    registry.add("red", 1)

    @registry.register("blue")
    def blue():
        return 2

    return registry


def test_a_name_is_found_and_the_names_are_sorted():
    registry = colours()
    assert registry.get("red") == 1 and registry.get("blue")() == 2
    assert registry.names() == ["blue", "red"] and list(registry) == ["blue", "red"]
    assert "red" in registry and "green" not in registry


def test_a_name_registered_twice_is_refused_and_the_first_kept():
    registry = colours()
    with pytest.raises(ValueError) as err:
        registry.add("red", 3)
    assert str(err.value) == ("colour 'red' is already registered; accepted: a new name "
                              "(registered: blue, red)")
    with pytest.raises(ValueError):
        registry.register("blue")(lambda: 4)
    assert registry.get("red") == 1 and registry.get("blue")() == 2


def test_a_miss_is_a_one_line_usage_error_listing_the_names():
    with pytest.raises(UsageError) as err:
        colours().get("green")
    assert str(err.value) == "unknown colour: received 'green'; accepted: blue, red"
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no KeyError shown
