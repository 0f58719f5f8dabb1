"""Config checks the benchmarks asked for (benchmarks/RESULTS.md, question 4)."""
import pytest

from aalp_tf.errors import UsageError
from tests.helpers.tiny import tiny_config


def test_jit_compile_under_deterministic_ops_is_refused_in_one_line():
    """Keras would silently train without XLA: --jit_compile must not be a no-op."""
    with pytest.raises(UsageError) as err:
        tiny_config("run", train_args={"jit_compile": True})
    assert str(err.value) == ("--jit_compile needs --nodeterministic (Keras turns XLA off under "
                              "deterministic ops); received: --jit_compile with --deterministic")


def test_jit_compile_with_nondeterministic_ops_is_accepted():
    cfg = tiny_config("run", train_args={"jit_compile": True, "deterministic": False})
    assert (cfg.train.jit_compile, cfg.train.deterministic) == (True, False)
