"""The error a bad config raises, below every module that checks one (the config checks, the run plan)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad config value. The message's first line names the value and what is allowed."""
