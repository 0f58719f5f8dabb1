"""Install with `pip install -e .` (tests: `pip install -e ".[test]"`)."""
import pathlib
import re

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "aalp_tf" / "__init__.py").read_text())[1]

setup(
    name="aalp_tf",
    version=VERSION,
    description="Adaptive Adversarial Logits Pairing (AALP) and its baselines in TensorFlow/Keras",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["aalp_tf", "aalp_tf.*"]),
    license="MIT",
    license_files=["LICENSE"],
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16",  # Keras 3
        "tensorflow-datasets",
        "keras-tuner",
        "absl-py",
        # Needed but not pulled in on Python 3.11 today:
        "importlib_resources",  # imported by tensorflow-datasets
        "tensorboard",  # KerasTuner and the TensorBoard callback
        "scipy",  # SVHN's .mat files
        "matplotlib",  # figures (analyze, tune)
        "scikit-learn",  # KerasTuner's BayesianOptimization (tune --tuner=bayesian)
    ],
    extras_require={
        "test": ["pytest"],
        # The gRPC client and warm-up records; it requires the full `tensorflow` package.
        "serving": ["tensorflow-serving-api"],
        # benchmarks/autoattack_agreement.py: the official AutoAttack (Croce & Hein's PyTorch
        # code) run on our SavedModel; neither the package nor its tests need these.
        "crosscheck": ["torch==2.13.0", "pyautoattack==0.2.0"],
    },
)
