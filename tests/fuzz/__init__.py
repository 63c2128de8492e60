"""Coverage-guided fuzzing of every parser hostile bytes can reach (see docs/reliability.md).

``python tests/fuzz list``, ``python tests/fuzz run TARGET --minutes N``, and
``python tests/fuzz campaign --minutes N`` (every target, N minutes each). The pytest
suite runs each target for a fixed, seeded number of inputs (tests/test_fuzz.py).
"""
