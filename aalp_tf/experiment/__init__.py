"""One training run from its config: data, model, resume, fit and export (training.py)."""
