"""Evaluation under attack: the attack suite (suite.py), AutoAttack's attacks (autoattack.py) and
the sanity checks against false robustness (checks.py)."""
