r"""Compute the paper's figures and tables from trained models.

    python -m aalp_tf.analyze --dataset=mnist --output_dir=analysis/mnist --test_examples=1000 \
        --models=natural:runs/mnist_natural,madry:runs/mnist_madry,aalp:runs/mnist_aalp

`--models` takes run folders (everything) or SavedModels (logits; inner activations too when
exported by aalp_tf). `--what` picks analyses: contributions, gradcam, sets, scatter, training
(default all). The adversary is the paper's for the dataset (aalp_tf.paper), e.g. PGD-40
with step 0.01 at epsilon 0.3 on MNIST; `--test_examples` sets how many test images are used.
"""
from aalp_tf import cli
from aalp_tf.cli.configs import analysis_config_from_flags


def main(argv):
    cli.reject_positional(argv)
    cfg = analysis_config_from_flags()
    from aalp_tf.analysis import runner  # after flag parsing: --help stays fast
    from aalp_tf.files import check_writable

    runner.select(cfg.what)  # reject a bad name before loading anything
    check_writable(cfg.out, flag="--output_dir")  # in seconds, not after the attacks
    written = runner.run_all(cfg)
    print(f"{len(written)} files in {cfg.out}")


if __name__ == "__main__":
    cli.run(main, "analyze")
