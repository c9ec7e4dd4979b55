"""Fakes of the outside platforms leadpush talks to, for tests, demos and benchmarks.

Not part of the product: a separate distribution (`fakes/pyproject.toml`) that leadpush never imports
and its image does not contain.
"""
