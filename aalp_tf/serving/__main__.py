r"""TF Serving around the exports: `python -m aalp_tf.serving <command> [--flag=value ...]`.

    python -m aalp_tf.serving config saved_models/ [--base_path=/models]
        writes saved_models/models.config (every model folder there) and batching.config, and
        prints the command that serves them
    python -m aalp_tf.serving predict --server=localhost:8500 --model_name=mnist_aalp \
        --images=images.npy [--rest] [--signature=predict_uint8] [--version=N]
        sends one Predict request and prints each image's class and probabilities

The first argument selects the command; the flags below serve both.
"""
import pathlib

from aalp_tf import cli
from aalp_tf.cli import FLAGS
from aalp_tf.cli.configs import predict_config_from_flags
from aalp_tf.errors import UsageError
from aalp_tf.registry import Registry

COMMANDS = Registry("serving command")


@COMMANDS.register("config")
def config_command(args) -> None:
    """Writes models.config and batching.config for the folder given."""
    if len(args) != 1:
        raise UsageError(f"config takes one folder; received: {' '.join(args) or 'none'}; "
                         "accepted: python -m aalp_tf.serving config saved_models/")
    from aalp_tf.serving import server_config

    folder = pathlib.Path(args[0])
    models, batching = server_config.write_configs(folder, base_path=FLAGS.base_path)
    names = server_config.model_folders(folder)
    print(f"wrote {models} ({', '.join(names)}) and {batching}")
    print("serve them with:\n  " + server_config.server_command(folder,
                                                                 base_path=FLAGS.base_path))


@COMMANDS.register("predict")
def predict_command(args) -> None:
    """Sends --images to --model_name at --server; prints classes and probabilities."""
    cli.reject_positional(["predict", *args])
    cfg = predict_config_from_flags()
    from aalp_tf.serving import client

    signature, outputs = client.predict(cfg)
    print(f"{cfg.model} at {cfg.server} ({'REST' if cfg.rest else 'gRPC'}, {signature}):")
    print("\n".join(client.result_lines(outputs)))


def main(argv):
    if len(argv) < 2:
        raise UsageError(f"no command given; accepted: {', '.join(COMMANDS.names())}, e.g. "
                         "python -m aalp_tf.serving config saved_models/")
    COMMANDS.get(argv[1])(argv[2:])


if __name__ == "__main__":
    cli.run(main, "serving")
