r"""Evaluate a model under attacks: a SavedModel (ours, a Keras model.export, any with one image
input and one logits output) or a .keras file, on a dataset or the user's own arrays.

    python -m aalp_tf.evaluate --model=saved_models/mnist_aalp/1 --dataset=mnist \
        --attacks=clean,fgsm,pgd10,pgd20,pgd40,pgd100,cw10,cw20,cw40,cw100
    python -m aalp_tf.evaluate --model=exported --images=x.npy --labels=y.npy --epsilon=0.1 \
        --attacks=clean,pgd20 --save_adversarial=adversarial.npz

epsilon and the batch size default to the paper's settings for --dataset (aalp_tf.paper); the
PGD/CW step is --step_size, else the paper's for --dataset, else epsilon / 4 (the library's rule
too: evaluation.robustness.step_size_rule). Prints a row like the paper's Table 2 and writes the
numbers as JSON, with the sanity checks against false robustness (aalp_tf.evaluation.checks;
--nochecks skips them) beside them; --save_adversarial writes the adversarial images, each
example's correctness under each attack and the labels. Each file is written whole or not at
all; a full disk is one line naming the flag, the file and the space it needed.
"""
import io

from aalp_tf import cli
from aalp_tf.cli.configs import eval_config_from_flags
from aalp_tf.errors import UsageError
from aalp_tf.files import full_disk_refused, write_atomically


def _save_adversarial(path, per_example: dict) -> None:
    """One .npz, written atomically (a kill or a full disk leaves no half file)."""
    import numpy as np

    arrays = {"labels": per_example["labels"]}
    for name, correct in per_example["correct"].items():
        arrays[f"correct_{name}"] = correct
        arrays[f"adversarial_{name}"] = per_example["adversarial"][name]
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_atomically(path, buffer.getvalue())


def _user_batches(cfg, logits_fn, image_shape):
    """The user's own arrays as batches, checked as the library checks them."""
    import tensorflow as tf

    from aalp_tf.evaluation import loading, robustness

    images, labels = loading.load_arrays(images=cfg.images, labels=cfg.labels,
                                         data_file=cfg.data_file)
    source = f"--data {cfg.data_file}" if cfg.data_file else f"--images {cfg.images}"
    if images.ndim != 4:
        raise UsageError(f"{source} holds images of shape {list(images.shape)}; accepted: "
                         "[N, H, W, C]")
    if images.dtype.kind != "f":
        raise UsageError(f"{source} holds {images.dtype} images; accepted: float images in "
                         "[0, 1] (divide uint8 pixels by 255)")
    if image_shape is not None and tuple(image_shape) != images.shape[1:]:
        raise UsageError(f"--model {cfg.model} takes images {list(image_shape)} but {source} "
                         f"has {list(images.shape[1:])}")
    try:
        robustness.check_labels(logits_fn, images, labels)
        robustness._batches((images, labels), cfg.data.batch_size)
    except ValueError as err:  # the library's message, as the command's one line
        raise UsageError(f"{source}: {str(err).split('Expected ', 1)[-1]}") from None
    if cfg.data.test_examples:
        images, labels = images[:cfg.data.test_examples], labels[:cfg.data.test_examples]
    batches = (tf.data.Dataset.from_tensor_slices((images.astype("float32"), labels))
               .batch(cfg.data.batch_size))
    return batches, len(labels), cfg.data_file or cfg.images, tuple(images.shape[1:])


def main(argv):
    cli.reject_positional(argv)
    cfg = eval_config_from_flags()
    from aalp_tf.data.datasets import DATASETS, evaluation_batches  # after flag parsing
    from aalp_tf.evaluation import robustness, suite
    from aalp_tf.evaluation import loading

    for name in cfg.attacks:
        suite.parse_attack(name)  # reject a bad name before loading anything
    output = cfg.output or suite.default_output(cfg.model)
    suite.check_output(output)
    logits_fn, image_shape = loading.load_logits(cfg.model, input_key=cfg.input_key,
                                                 output_key=cfg.output_key)
    if cfg.images or cfg.data_file:
        batches, count, data_name, image_shape = _user_batches(cfg, logits_fn, image_shape)
    else:
        spec = DATASETS.get(cfg.data.dataset)
        if image_shape is not None and tuple(image_shape) != tuple(spec.image_shape):
            raise UsageError(f"--model {cfg.model} takes images {list(image_shape)} but "
                             f"--dataset={spec.name} has {list(spec.image_shape)}")
        image_shape, data_name = spec.image_shape, spec.name
        batches, count = evaluation_batches(cfg.data)
    print(f"evaluating {cfg.model} on {count} {data_name} test images, epsilon="
          f"{cfg.attack.epsilon:.6g} ({cfg.attack.norm}), step={cfg.attack.step_size:.6g}, "
          f"restarts={cfg.restarts}")
    per_example = {}
    result = robustness.evaluate(
        logits_fn, batches, attacks=cfg.attacks, image_shape=image_shape,
        epsilon=cfg.attack.epsilon, step_size=cfg.attack.step_size, norm=cfg.attack.norm,
        restarts=cfg.restarts, seed=cfg.seed, checks=cfg.checks,
        check_examples=cfg.check_examples, num_batches=-(-count // cfg.data.batch_size),
        verbose=True, per_example=per_example, keep_adversarial=bool(cfg.save_adversarial))
    print(suite.table_row(cfg.model, result["accuracy"]))
    for name, ran in result["attacks_run"].items():  # which AutoAttack, say, was run
        print(f"  {name}: {ran}")
    wrong = {name: [int(i) for i, ok in enumerate(correct) if not ok]
             for name, correct in per_example["correct"].items()}
    for name, indices in wrong.items():  # the per-example result, in one line per attack
        shown = ", ".join(map(str, indices[:20])) + (", ..." if len(indices) > 20 else "")
        print(f"  {name}: {len(indices)} of {count} examples wrong: [{shown}]")
    record = {"model": cfg.model, "dataset": data_name, **result, "wrong": wrong}
    failed = record.get("checks", {}).get("failed")
    if failed:
        print(f"WARNING: sanity checks failed: {', '.join(failed)} (details above and in the "
              "JSON): these numbers may overstate robustness")
    # The numbers first: the small file survives a disk with no room left for the images.
    with _room_for(output, "--output_file"):
        output = suite.write_json(output, record)
    print(f"wrote {output}")
    if cfg.save_adversarial:
        with _room_for(cfg.save_adversarial, "--save_adversarial"):
            _save_adversarial(cfg.save_adversarial, per_example)
        print(f"wrote {cfg.save_adversarial}")


def _room_for(path, flag: str):
    """A write to `path` that meets a full disk ends in one line naming `flag`: nothing half
    written is left, and the evaluation is run again once there is room."""
    return full_disk_refused(path, flag=flag, then="run the command again",
                             elsewhere=f"a {flag} on a disk with room")


if __name__ == "__main__":
    cli.run(main, "evaluate")
