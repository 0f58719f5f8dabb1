"""The test suite: one test file per module (see README, Tests)."""
