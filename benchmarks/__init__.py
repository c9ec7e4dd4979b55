"""Benchmarks: scripts that start leadpush as a user would, drive it, and print their figures.

Not part of the test suite. `python -m benchmarks.run_all [--quick]` runs them all and regenerates
docs/benchmarks.md; each module also runs on its own (`python -m benchmarks.<name> --help`).
"""
