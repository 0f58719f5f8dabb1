"""Question 2: what Guided Dropout adds to a training step, against a backbone-twice strawman.

    python -m benchmarks.gd_overhead            # LeNet (PGD-40) and ResNet32 (PGD-7), batch 128
    python -m benchmarks.gd_overhead --quick    # width-4 LeNet (< 1 min)

Ratios of train steps (trainer.AdversarialModel.train_step traced as Keras does), paired per
round: aalp / aalp_sw and alp + --guided_dropout / alp (goal <= 1.05). Our contribution pass
(dLoss/dA_fc) runs the logits layer only. The strawman re-runs the backbone on the branch inputs
to get A_fc for that pass (one extra training-mode forward per branch, no extra backward), as an
implementation that asks the whole model for dLoss/dA_fc would. Each is measured at the paper's
PGD steps and at PGD-1, where the weight update is most of the step and any extra backbone work
shows. A second table counts the forward Conv2D and the MatMul ops in each traced step (its graph
and every function it calls, the PGD loop body included): aalp has exactly aalp_sw's Conv2D ops,
so no backbone runs twice; the strawman has one backbone's more per branch.
"""
from benchmarks import harness
from aalp_tf.experiment import training
from aalp_tf.trainer import AdversarialModel


class BackboneTwice(AdversarialModel):
    """The strawman: Guided Dropout's contribution pass runs the backbone again."""

    def branch_inputs(self, images, labels):
        self._inputs = super().branch_inputs(images, labels)
        return self._inputs

    def contribution(self, features, labels, sample_weight=None):
        again = {b: self.backbone(x, training=True) for b, x in self._inputs.items()}
        return super().contribution(again, labels, sample_weight)


VARIANTS = {  # name -> (method, --guided_dropout, strawman)
    "alp": ("alp", False, False),
    "alp + gd": ("alp", True, False),
    "aalp_sw": ("aalp_sw", False, False),
    "aalp": ("aalp", False, False),
    "aalp, backbone twice": ("aalp", False, True),
}
RATIOS = [("alp + gd", "alp"), ("aalp", "aalp_sw"), ("aalp, backbone twice", "aalp_sw")]
GOAL = 1.05


def op_counts(step_fn, data, types=("Conv2D", "MatMul")):
    """Ops of each type in the traced step's graph and in every function of its library."""
    graph_def = step_fn.get_concrete_function(data).graph.as_graph_def()
    nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    return {t: sum(n.op == t for n in nodes) for t in types}


def measure(arch, *, width, steps, batch, repeats, counts=None):
    """Ratio rows; with `counts` (a list), appends one op-count row per variant to it."""
    variants = {}
    for name, (method, gd, strawman) in VARIANTS.items():
        model, spec = harness.build(harness.run_config(arch, method, width=width, steps=steps,
                                                       batch=batch, guided_dropout=gd))
        if strawman:  # the same object, with the strawman's contribution pass
            model.__class__ = BackboneTwice
        x, y = harness.random_batch(spec.image_shape, batch)
        step_fn = harness.train_step_function(model)
        variants[name] = (lambda f, data: lambda: f(data))(step_fn, (x, y))
        if counts is not None:
            ops = op_counts(step_fn, (x, y))
            counts.append([arch, steps or harness.paper_steps(arch), name, ops["Conv2D"],
                           ops["MatMul"]])
    times = harness.interleaved(variants, repeats=repeats)
    k = steps or harness.paper_steps(arch)
    rows = []
    for num, den in RATIOS:
        ratio = harness.paired_ratio(times, lambda r: times[num][r], lambda r: times[den][r])
        per_round = [a / b for a, b in zip(times[num], times[den])]
        goal = "" if "twice" in num else ("yes" if ratio <= GOAL else "NO")
        rows.append([arch, k, f"{num} / {den}", f"{1e3 * harness.median(times[num]):.1f}",
                     f"{1e3 * harness.median(times[den]):.1f}", f"**{ratio:.3f}**",
                     harness.spread(per_round), goal])
    return rows


def main():
    p = harness.parser(__doc__.splitlines()[0])
    p.add_argument("--models", default="lenet,resnet32")
    p.add_argument("--steps", default="", help="comma-separated PGD steps (default: the "
                   "paper's, then 1)")
    args = p.parse_args()
    training.seed_everything(0, deterministic=True)
    archs = ["lenet"] if args.quick else args.models.split(",")
    width, batch = (4, 32) if args.quick else (0, 128)
    repeats = args.repeats or (3 if args.quick else 7)
    harness.header("Guided Dropout's overhead")
    rows, counts = [], []
    for arch in archs:
        paper_steps = 3 if args.quick else harness.paper_steps(arch)
        for steps in [int(k) for k in args.steps.split(",") if k] or [paper_steps, 1]:
            rows += measure(arch, width=width, steps=steps, batch=batch, repeats=repeats,
                            counts=counts if steps == paper_steps else None)
    harness.table(["model", "PGD steps", "ratio", "numerator ms", "denominator ms",
                   f"ratio (goal <= {GOAL})", "per-round range", "goal met"], rows)
    harness.table(["model", "PGD steps", "variant", "Conv2D ops in the traced step",
                   "MatMul ops"], counts)


if __name__ == "__main__":
    main()
