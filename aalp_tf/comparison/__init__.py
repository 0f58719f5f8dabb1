"""Methods compared over seeds: the cell plan, running and resuming cells, statistics, reports.

`config` and `cells` import no TensorFlow, so the command line and `--list_cells` stay fast.
"""
