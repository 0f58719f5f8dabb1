"""Training methods: each is one loss over the logits of the branches it trains on.

A method says which branches it needs ("clean", "adv"), which objective its PGD adversary
maximises, and how the per-example loss is made from the branch logits. The trainer runs the
backbone once per branch and hands the method logits, which is what lets Guided Dropout take
its contribution pass (dLoss/dA_fc) through the last dense layer only.

Your own method is one decorated function (README, "Your own method"):

    @aalp_tf.register_method("mart", branches=("clean", "adv"), logs=("kl",), uses_alpha=True)
    def mart(*, logits, labels, cfg):
        ...  # -> ([N] per-example loss, {"kl": [N] values to log})

It then trains in `aalp_tf.AdversarialModel(..., method="mart")`, in `python -m aalp_tf.train
--imports=my_module --method=mart`, and in the tuner (which searches α when `uses_alpha`).

Classification loss of the pairing methods (alp, aalp_sw, aalp_gd, aalp): the mean of the
clean and the adversarial cross-entropy, 0.5·CE(clean) + 0.5·CE(adv), i.e. Kannan et al.'s
mixed minibatch of half clean, half adversarial examples.
"""
import dataclasses
from typing import Callable, Optional, Tuple

from aalp_tf import losses
from aalp_tf.config import MethodConfig
from aalp_tf.errors import invalid_argument
from aalp_tf.registry import Registry

CLEAN, ADV = "clean", "adv"


@dataclasses.dataclass(frozen=True)
class Method:
    """How one training method turns branch logits into a per-example loss.

    Attributes:
      loss: (*, logits: {branch: [N, K]}, labels, cfg) -> ([N] loss, {name: [N] value to log}).
      branches: the inputs the backbone runs on, in order.
      adversary: the objective PGD maximises to make the "adv" branch: "ce" (cross-entropy with
        the true label) or "kl" (KL from the clean prediction, TRADES); None without "adv".
      logs: names of the per-example values `loss` returns for logging.
      guided_dropout: Guided Dropout is part of the method (aalp_gd, aalp).
      uses_alpha: the loss reads `cfg.alpha`, so the tuner may search it (the pairing methods).
    """

    loss: Callable
    branches: Tuple[str, ...]
    adversary: Optional[str] = "ce"
    logs: Tuple[str, ...] = ()
    guided_dropout: bool = False
    uses_alpha: bool = False


METHODS = Registry("method")
ADVERSARIES = ("ce", "kl")


def register_method(name: str, *, branches=(CLEAN, ADV), adversary: Optional[str] = "ce",
                    logs=(), guided_dropout: bool = False, uses_alpha: bool = False):
    """Decorator: registers `loss` as the training method `name`.

    The loss is `(*, logits, labels, cfg) -> (per_example_loss [N], {name: [N]})`: `logits`
    maps each branch to its [N, K] logits, `labels` are integer class ids and `cfg` is the
    model's MethodConfig (`alpha`, `trades_beta`). Return per-example values; the trainer
    reduces them by the global batch and applies sample weights.

    Args:
      name: the method's name, as `method=` and `--method` take it; must be new.
      branches: the inputs the backbone runs on: ("clean",), ("adv",) or ("clean", "adv").
      adversary: what the PGD making the "adv" branch maximises: "ce" (cross-entropy of the
        true label) or "kl" (KL from the clean prediction, as TRADES); None without "adv".
      logs: the names of the per-example values the loss returns for logging.
      guided_dropout: Guided Dropout is part of the method.
      uses_alpha: the loss reads `cfg.alpha`: the tuner may search it.
    """
    branches, logs = tuple(branches), tuple(logs)
    if not branches or len(set(branches)) != len(branches) or set(branches) - {CLEAN, ADV}:
        raise invalid_argument("branches", '("clean",), ("adv",) or ("clean", "adv")',
                               f"branches={branches!r}")
    wanted = ADVERSARIES if ADV in branches else (None,)
    if adversary not in wanted:
        raise invalid_argument("adversary", f"{' or '.join(map(repr, wanted))} with branches="
                               f"{branches!r}", f"adversary={adversary!r}")

    def add(loss: Callable) -> Callable:
        METHODS.add(name, Method(loss, branches=branches, adversary=adversary, logs=logs,
                                 guided_dropout=guided_dropout, uses_alpha=uses_alpha))
        return loss

    return add


def _natural(*, logits, labels, cfg: MethodConfig):
    ce = losses.cross_entropy(logits=logits[CLEAN], labels=labels)
    return ce, {"ce_clean": ce}


def _madry(*, logits, labels, cfg: MethodConfig):
    """Madry et al.: cross-entropy on the adversarial examples only."""
    ce = losses.cross_entropy(logits=logits[ADV], labels=labels)
    return ce, {"ce_adv": ce}


def _pairing(*, logits, labels, cfg: MethodConfig, term):
    """Eq. 10: 0.5·(CE_clean + CE_adv) + alpha · pairing term, which logs the unweighted ALP
    loss (Eq. 1) beside it."""
    clean, adv = logits[CLEAN], logits[ADV]
    ce_clean = losses.cross_entropy(logits=clean, labels=labels)
    ce_adv = losses.cross_entropy(logits=adv, labels=labels)
    logs = {"ce_clean": ce_clean, "ce_adv": ce_adv,
            "alp": losses.alp(clean_logits=clean, adv_logits=adv)}
    return 0.5 * (ce_clean + ce_adv) + cfg.alpha * term, logs  # Eq. 10


def _alp(*, logits, labels, cfg):
    """Kannan et al.'s ALP: the pairing term is Eq. 1."""
    term = losses.alp(clean_logits=logits[CLEAN], adv_logits=logits[ADV])
    return _pairing(logits=logits, labels=labels, cfg=cfg, term=term)


def _adaptive_alp(*, logits, labels, cfg):
    """AALP's adaptive sample weighting: the pairing term is Eq. 9, Eq. 1 × the clean
    true-class probability (no gradient through the weight)."""
    term = losses.adaptive_alp(clean_logits=logits[CLEAN], adv_logits=logits[ADV], labels=labels)
    loss, logs = _pairing(logits=logits, labels=labels, cfg=cfg, term=term)
    logs["weight"] = losses.adaptive_weight(clean_logits=logits[CLEAN], labels=labels)
    return loss, logs


def _trades(*, logits, labels, cfg: MethodConfig):
    """TRADES (Zhang et al.): CE(clean) + beta · KL(p_clean || p_adv)."""
    ce_clean = losses.cross_entropy(logits=logits[CLEAN], labels=labels)
    kl = losses.kl_divergence(clean_logits=logits[CLEAN], adv_logits=logits[ADV])
    return ce_clean + cfg.trades_beta * kl, {"ce_clean": ce_clean, "kl": kl}


# The built-in methods register as a user's method does.
_PAIRING_LOGS = ("ce_clean", "ce_adv", "alp")
register_method("natural", branches=(CLEAN,), adversary=None, logs=("ce_clean",))(_natural)
register_method("madry", branches=(ADV,), logs=("ce_adv",))(_madry)
register_method("alp", logs=_PAIRING_LOGS, uses_alpha=True)(_alp)
register_method("trades", adversary="kl", logs=("ce_clean", "kl"))(_trades)
register_method("aalp_sw", logs=_PAIRING_LOGS + ("weight",), uses_alpha=True)(_adaptive_alp)
register_method("aalp_gd", logs=_PAIRING_LOGS, guided_dropout=True, uses_alpha=True)(_alp)
register_method("aalp", logs=_PAIRING_LOGS + ("weight",), guided_dropout=True,
                uses_alpha=True)(_adaptive_alp)
