"""How every `python -m aalp_tf.X` command starts and fails: one line and status 2 on bad input."""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's C++ start-up chatter off screen

from absl import app, logging  # noqa: E402

from aalp_tf import cli_flags  # noqa: E402
from aalp_tf.errors import UsageError  # noqa: E402


def run(main) -> None:
    """absl's app.run with our flag parser; UsageError and Ctrl-C end in one line, no traceback."""

    def guarded(argv):
        if logging.get_verbosity() == logging.INFO:  # absl's default: TF's savers chatter at INFO
            logging.set_verbosity(logging.WARNING)
        try:
            main(argv)
        except UsageError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted: the run folder keeps every completed epoch; run the same "
                  "command again to resume", file=sys.stderr)
            sys.exit(130)

    app.run(guarded, flags_parser=cli_flags.parse_flags)


def reject_positional(argv) -> None:
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}; every option is a --flag "
                         "(see --helpshort)")
