"""A user's own package outside ldae/: parts that ldae builds from `_target_` (tests/integration/test_plugins.py)."""
