"""quantwise benchmarks: ``python -m benchmarks.sizing``, ``.planner``, ``.reconcile``.

Not timed tests: each prints a table; ``tests/unit/test_benchmarks.py`` runs each once at a
small size so that they keep working.
"""
