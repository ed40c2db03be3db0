"""Hypothesis settings shared by the unit tests: moderate, reproducible, no example database.

``derandomize`` makes every run explore the same examples, so a failure is never a fluke of
one run; ``database=None`` keeps the working tree clean.
"""

from hypothesis import settings

FUZZ = settings(max_examples=200, deadline=None, database=None, derandomize=True)
FUZZ_FEW = settings(max_examples=50, deadline=None, database=None, derandomize=True)
