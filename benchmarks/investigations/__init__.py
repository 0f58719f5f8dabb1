"""Finished one-off investigations (oneDNN, the MaxPoolGrad rewrite, a PGD profile, XLA): kept
so their findings in RESULTS.md can be reproduced, not rerun with every change."""
