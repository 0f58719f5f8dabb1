"""Export any checkpoint of a run folder as a SavedModel in TF Serving's layout:

    python -m aalp_tf.export --model_dir=runs/mnist_aalp [--epoch=EPOCH] [--export_name=NAME]
        [--version=N] [--export_dir=saved_models]

Without --epoch, the epoch the run's own --export_epoch picks (what training exported); the
run's own export folder and name unless --export_dir and --export_name say otherwise.
"""
from aalp_tf import cli
from aalp_tf.cli.configs import export_config_from_flags


def main(argv):
    """A run's checkpoint -> <export_dir>/<name>/<version>/."""
    from aalp_tf.serving import run_export

    cli.reject_positional(argv)
    cfg = export_config_from_flags()
    path, epoch = run_export.export_run(cfg)
    print(f"exported epoch {epoch} of {cfg.model_dir}: {path}")


if __name__ == "__main__":
    cli.run(main, "export")
