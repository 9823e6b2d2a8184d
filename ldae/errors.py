"""The error every layer raises for a bad config value: the CLIs print its first line and exit 2."""


class ConfigError(ValueError):
    """A bad config value. The message's first line names the value and what is allowed."""
