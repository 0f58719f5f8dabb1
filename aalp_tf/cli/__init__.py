"""The command line: every flag (`table`), flags -> configs once (`configs`), and how a command
starts and fails (`runner`). Commands are `python -m aalp_tf.<command>`."""
from aalp_tf.cli.runner import reject_positional, run
from aalp_tf.cli.table import FLAGS

__all__ = ["FLAGS", "reject_positional", "run"]
