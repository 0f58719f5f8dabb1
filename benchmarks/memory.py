"""Question 6: peak resident memory of a training run, per model and method.

    python -m benchmarks.memory            # LeNet/MNIST and ResNet32/CIFAR-10, every method
    python -m benchmarks.memory --quick    # width-4 LeNet, natural and aalp (< 1 min)

Each configuration is one fresh child process running `training.train` (the path `train`
takes) on synthetic uint8 arrays of the dataset's original size, batch 128, the paper's PGD
steps, one batch (128) of validation examples, no export, stopped after STEPS training steps
(memory peaks within the first steps: every buffer is allocated by then), then validated. The
peak is ru_maxrss of that child (RUSAGE_CHILDREN, read in a fresh interpreter that starts only
it). `[model only]` is a child
that imports the package, builds the model and takes no step: what TF and the weights cost.
"""
import dataclasses
import shutil
import sys
import tempfile

from benchmarks import harness

STEPS = 2


def stop_after(steps):
    """A Keras callback that ends training after `steps` batches."""
    import keras

    class StopAfter(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch + 1 >= steps:
                self.model.stop_training = True

    return StopAfter()


def child(arch, method, width, steps, scale):
    """Runs one configuration (in the child process)."""
    from aalp_tf.experiment import training
    from aalp_tf.data.datasets import DATASETS
    from benchmarks.input_pipeline import synthetic
    cfg = harness.run_config(arch, "natural" if method == "[model only]" else method,
                             width=width, steps=steps)
    if method == "[model only]":
        training.seeded_model(cfg, DATASETS.get(cfg.data.dataset))
        return
    folder = tempfile.mkdtemp(prefix="aalp_memory_")
    cfg = cfg.replace(data=dataclasses.replace(cfg.data, val_examples=128),
                      train=dataclasses.replace(cfg.train, model_dir=folder + "/run"))
    try:
        training.train(cfg, arrays=synthetic(arch, scale), verbose=0, export_model=False,
                       callbacks=[stop_after(STEPS)])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        arch, method, width, steps, scale = sys.argv[2:7]
        child(arch, method, int(width), int(steps), float(scale))
        return
    p = harness.parser(__doc__.splitlines()[0])
    p.add_argument("--models", default="lenet,resnet32")
    args = p.parse_args()
    from aalp_tf.methods import METHODS
    harness.header("Peak resident memory of a training run")
    if args.quick:
        plan = [("lenet", m, 4, 3, 0.05) for m in ("[model only]", "natural", "aalp")]
    else:
        plan = [(a, m, 0, 0, 1.0) for a in args.models.split(",")
                for m in ["[model only]"] + METHODS.names()]
    rows = []
    for arch, method, width, steps, scale in plan:
        mib = harness.peak_rss_of_child(
            [sys.executable, "-m", __spec__.name, "--child", arch, method, str(width), str(steps),
             str(scale)], timeout=1800)
        rows.append([arch, method, f"{mib:.0f}"])
        print(f"{arch} {method}: {mib:.0f} MiB", flush=True)
    print()
    harness.table(["model", "method", "peak RSS MiB"], rows)


if __name__ == "__main__":
    main()
