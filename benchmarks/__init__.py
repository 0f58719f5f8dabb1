"""Speed and memory measurements of aalp_tf, rerun with `python -m benchmarks.NAME` from the
repository top; results and commands in RESULTS.md."""
