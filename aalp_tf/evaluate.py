"""Evaluate a SavedModel under attacks, through its serving signature alone.

    python -m aalp_tf.evaluate --model=saved_models/mnist_aalp/1 --dataset=mnist \
        --attacks=clean,fgsm,pgd10,pgd20,pgd40,pgd100,cw10,cw20,cw40,cw100

epsilon and the PGD/CW step size default to the dataset's paper settings (flags/<dataset>.cfg).
Prints a row like the paper's Table 2 and writes the numbers as JSON, with the sanity checks
against false robustness (aalp_tf.evaluation.checks; --nochecks skips them) beside them.
"""

from aalp_tf import cli
from aalp_tf.cli import eval_config_from_flags
from aalp_tf.errors import UsageError


def sanity_checks(cfg, logits_fn, batches) -> dict:
    """Runs aalp_tf.evaluation.checks on the first cfg.check_examples test images; prints and returns them."""
    from aalp_tf.evaluation import checks

    x, y = checks.first_examples(batches, cfg.check_examples)
    results = checks.run_checks(logits_fn, x, y, epsilon=cfg.attack.epsilon, seed=cfg.seed)
    print(f"sanity checks on the first {x.shape[0]} test images:")
    print("\n".join(checks.report_lines(results)))
    return checks.as_record(results, examples=int(x.shape[0]))


def main(argv):
    cli.reject_positional(argv)
    cfg = eval_config_from_flags()
    from aalp_tf.evaluation import suite  # after flag parsing: --help stays fast
    from aalp_tf.serving import saved_model  # after flag parsing: --help stays fast
    from aalp_tf.data.datasets import DATASETS, evaluation_batches

    for name in cfg.attacks:
        suite.parse_attack(name)  # reject a bad name before loading anything
    spec = DATASETS.get(cfg.data.dataset)
    logits_fn, image_shape = saved_model.load_serving_logits(cfg.model)
    if tuple(image_shape) != tuple(spec.image_shape):
        raise UsageError(f"--model {cfg.model} takes images {list(image_shape)} but "
                             f"--dataset={spec.name} has {list(spec.image_shape)}")
    batches, count = evaluation_batches(cfg.data)
    print(f"evaluating {cfg.model} on {count} {spec.name} test images, epsilon="
          f"{cfg.attack.epsilon:.6g}, step={cfg.attack.step_size:.6g}, restarts={cfg.restarts}")
    checked = sanity_checks(cfg, logits_fn, batches) if cfg.checks else None
    accuracy = suite.evaluate(
        logits_fn, batches, cfg.attacks, image_shape=image_shape, epsilon=cfg.attack.epsilon,
        step_size=cfg.attack.step_size, restarts=cfg.restarts, seed=cfg.seed,
        num_batches=-(-count // cfg.data.batch_size))
    print(suite.table_row(cfg.model, accuracy))
    output = cfg.output or suite.default_output(cfg.model)
    record = {"model": cfg.model, "dataset": spec.name, "examples": count,
              "epsilon": cfg.attack.epsilon, "step_size": cfg.attack.step_size,
              "restarts": cfg.restarts, "seed": cfg.seed, "accuracy": accuracy}
    if checked is not None:
        record["checks"] = checked
        if checked["failed"]:
            print(f"WARNING: sanity checks failed: {', '.join(checked['failed'])} (details above "
                  "and in the JSON): these numbers may overstate robustness")
    output = suite.write_json(output, record)
    print(f"wrote {output}")


if __name__ == "__main__":
    cli.run(main)
