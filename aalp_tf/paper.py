"""The paper's settings per dataset (§4.1): what `python -m aalp_tf.train --dataset=X` trains
with for every flag the user did not set, and the attack `evaluate`, `analyze` and `compare`
measure with.

A Python table rather than flagfiles so that the library reaches it from an installed package
(no repository folder to find) and nothing parses files by hand. The keys are the commands'
flag names; the backbone is the dataset's own (`DatasetSpec.default_model`).
"""
from typing import Dict, Union

Setting = Union[int, float, str]

PAPER_SETTINGS: Dict[str, Dict[str, Setting]] = {
    # MNIST / LeNet: Adam lr 1e-4; training adversary PGD-40, step 0.01, epsilon 0.3. The paper
    # gives no batch size or length: batch 50 for 84 epochs is ~100k steps, Madry et al.'s MNIST
    # schedule.
    "mnist": {"epsilon": 0.3, "step_size": 0.01, "attack_steps": 40, "learning_rate": 1e-4,
              "batch_size": 50, "epochs": 84},
    # SVHN / ResNet9: Adam lr 1e-4; PGD-10, step 3/255, epsilon 12/255 ("12pix", "3pix"). Batch
    # 128 for 50 epochs is our choice.
    "svhn": {"epsilon": 12 / 255, "step_size": 3 / 255, "attack_steps": 10,
             "learning_rate": 1e-4, "batch_size": 128, "epochs": 50},
    # CIFAR-10 / ResNet32: Adam lr 1e-5; PGD-7, step 2/255, epsilon 8/255 ("8pix", "2pix").
    # Batch 128 for 200 epochs is our choice (Adam at 1e-5 converges slowly).
    "cifar10": {"epsilon": 8 / 255, "step_size": 2 / 255, "attack_steps": 7,
                "learning_rate": 1e-5, "batch_size": 128, "epochs": 200},
}


def paper_settings(dataset: str, norm: str = "linf") -> Dict[str, Setting]:
    """{flag name: value} of the paper's settings for `dataset`.

    Args:
      dataset: a datasets registry name.

    Returns:
      A new dict: `epsilon` and `step_size` (pixel units of [0, 1]; `step_size` is the PGD/CW
      step of training and of the evaluation alike), `attack_steps`, `learning_rate`,
      `batch_size`, `epochs`. Empty for a dataset the paper does not train on (one registered
      by the user), whose values must then be given. The paper's threat model is L-inf: for
      another `norm` its epsilon and step mean nothing, and are left out (the user gives them).
    """
    settings = dict(PAPER_SETTINGS.get(dataset, {}))
    if norm != "linf":
        settings.pop("epsilon", None), settings.pop("step_size", None)
    return settings
