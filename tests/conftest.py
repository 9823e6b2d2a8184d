import os
import tempfile
import warnings

import pytest

# Tests never touch the user's cache of fitted tokenizers.
os.environ.setdefault("LDAE_CACHE", tempfile.mkdtemp(prefix="ldae-test-cache-"))
os.environ.setdefault("WANDB_MODE", "offline")
warnings.filterwarnings("ignore", category=DeprecationWarning)


@pytest.fixture
def compose():
    """compose(*overrides) -> the composed `train` config, shrunk to `scale=smoke` unless a scale is given."""
    from ldae.config import compose_config

    def _compose(*overrides: str, config_name: str = "train"):
        ov = list(overrides)
        if config_name == "train" and not any(o.startswith("scale=") for o in ov):
            ov.append("scale=smoke")
        return compose_config(ov, config_name)

    return _compose
