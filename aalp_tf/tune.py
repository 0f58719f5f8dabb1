"""Search α (and optionally the learning rate and keep fraction) with KerasTuner:

    python -m aalp_tf.tune --dataset=mnist --method=aalp --tuner=random --max_trials=10

Every trial is a training run like `python -m aalp_tf.train` with the trial's values; the
objective is measured on the validation slice. Rerunning the same command resumes the search.
With KERASTUNER_TUNER_ID / KERASTUNER_ORACLE_IP / KERASTUNER_ORACLE_PORT set, the same command
is a chief (holds the oracle) or a worker (runs trials): see the README's "Tuning" section.
Exit status 1 when no trial completed.
"""
import pathlib
import sys

from aalp_tf import cli
from aalp_tf.cli.configs import tune_config_from_flags


def main(argv):
    cli.reject_positional(argv)
    cfg = tune_config_from_flags()
    from aalp_tf.files import check_writable
    from aalp_tf.tuning import tuners  # after flag parsing: --help stays fast

    # In seconds, not after the search: the search folder holds every trial's run folder.
    check_writable(cfg.run.train.model_dir, flag="--model_dir", within=True)
    if cfg.export_best:
        check_writable(pathlib.Path(cfg.run.train.export_dir) / cfg.run.export_name,
                       flag="--export_dir")
    result = tuners.search(cfg)
    failed = [row["trial"] for row in result.rows if row["status"] != tuners.COMPLETED]
    if result.rows and len(failed) == len(result.rows):
        print(f"error: no trial completed ({len(failed)} failed: {', '.join(failed)}); their "
              f"errors are above and in {tuners.SearchFolder(cfg.run.train.model_dir).root}",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    cli.run(main, "tune")
