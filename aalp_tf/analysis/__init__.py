"""The paper's analyses: the quantities (quantities.py), measured on models (probes.py) loaded
from run folders or SavedModels (model_sources.py), per epoch during training
(training_probe.py), drawn and tabulated (figures.py, tables.py) by the runner (runner.py)."""
