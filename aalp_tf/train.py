"""Train a model: `python -m aalp_tf.train --dataset=cifar10 --method=aalp [--flag=value ...]`.

The paper's settings for the dataset (aalp_tf.paper) fill in every flag not given on the command
line or in a --flagfile. Rerunning the same command resumes the run folder where it stopped.
"""
import sys

from aalp_tf import cli
from aalp_tf.cli.configs import config_from_flags


def main(argv):
    cli.reject_positional(argv)
    cfg = config_from_flags()
    import tensorflow as tf  # after flag parsing: --help needs no TensorFlow

    from aalp_tf.experiment.training import train

    try:
        result = train(cfg, wait=cli.FLAGS.wait)
    except tf.errors.UnavailableError as err:  # a peer worker died (multi-worker runs)
        first = str(err).strip().splitlines()[0][:300]
        print(f"error: a worker of the cluster is gone ({first}); restart every worker with the "
              f"same command to resume from the last completed epoch", file=sys.stderr)
        sys.exit(1)
    chosen = result.export_logs
    shown = {k: round(v, 4) for k, v in chosen.items() if "accuracy" in k}
    print(f"run folder: {result.run_dir}  exported epoch {result.export_epoch}: {shown}")


if __name__ == "__main__":
    cli.run(main, "train")
