"""Adversarial and reliability tests: DP audit, API fuzzing, attacks, bad files."""
