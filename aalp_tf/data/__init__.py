"""Datasets: the registry, tf.data pipelines in [0, 1] (datasets.py), and the readers of TFDS and
the original distribution files (readers.py)."""
