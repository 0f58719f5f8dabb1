"""Config checks the benchmarks asked for (benchmarks/RESULTS.md, question 4)."""
import pytest

from aalp_tf.config import validate
from aalp_tf.errors import UsageError
from tests.helpers.tiny import tiny_config


def test_jit_compile_under_deterministic_ops_is_refused_in_one_line():
    """Keras would silently train without XLA: --jit_compile must not be a no-op."""
    cfg = tiny_config("run", train_args={"jit_compile": True})
    with pytest.raises(UsageError) as err:
        validate(cfg)
    assert str(err.value) == ("--jit_compile needs --nodeterministic (Keras turns XLA off under "
                              "deterministic ops); received: --jit_compile with --deterministic")


def test_jit_compile_with_nondeterministic_ops_is_accepted():
    cfg = tiny_config("run", train_args={"jit_compile": True, "deterministic": False})
    assert validate(cfg) is cfg
