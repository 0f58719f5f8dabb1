"""Tuning with KerasTuner: the search space and objectives (search_space.py), the tuners over the
one training path (tuners.py), and the table and figure of a search (report.py)."""
