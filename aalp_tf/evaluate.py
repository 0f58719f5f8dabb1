r"""Evaluate a SavedModel under attacks, through its serving signature alone.

    python -m aalp_tf.evaluate --model=saved_models/mnist_aalp/1 --dataset=mnist \
        --attacks=clean,fgsm,pgd10,pgd20,pgd40,pgd100,cw10,cw20,cw40,cw100

epsilon, the PGD/CW step size and the batch size default to the paper's settings for the dataset
(aalp_tf.paper).
Prints a row like the paper's Table 2 and writes the numbers as JSON, with the sanity checks
against false robustness (aalp_tf.evaluation.checks; --nochecks skips them) beside them.
"""
from aalp_tf import cli
from aalp_tf.cli.configs import eval_config_from_flags
from aalp_tf.errors import UsageError


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
    spec = DATASETS.get(cfg.data.dataset)
    logits_fn, image_shape = loading.load_logits(cfg.model)
    if tuple(image_shape) != tuple(spec.image_shape):
        raise UsageError(f"--model {cfg.model} takes images {list(image_shape)} but "
                         f"--dataset={spec.name} has {list(spec.image_shape)}")
    batches, count = evaluation_batches(cfg.data)
    print(f"evaluating {cfg.model} on {count} {spec.name} test images, epsilon="
          f"{cfg.attack.epsilon:.6g} ({cfg.attack.norm}), step={cfg.attack.step_size:.6g}, "
          f"restarts={cfg.restarts}")
    result = robustness.evaluate(
        logits_fn, batches, attacks=cfg.attacks, image_shape=image_shape,
        epsilon=cfg.attack.epsilon, step_size=cfg.attack.step_size, norm=cfg.attack.norm,
        restarts=cfg.restarts,
        seed=cfg.seed, checks=cfg.checks, check_examples=cfg.check_examples,
        num_batches=-(-count // cfg.data.batch_size), verbose=True)
    print(suite.table_row(cfg.model, result["accuracy"]))
    for name, ran in result["attacks_run"].items():  # which AutoAttack, say, was run
        print(f"  {name}: {ran}")
    record = {"model": cfg.model, "dataset": spec.name, **result}
    failed = record.get("checks", {}).get("failed")
    if failed:
        print(f"WARNING: sanity checks failed: {', '.join(failed)} (details above and in the "
              "JSON): these numbers may overstate robustness")
    output = suite.write_json(output, record)
    print(f"wrote {output}")


if __name__ == "__main__":
    cli.run(main, "evaluate")
