import os
import sys
import tempfile
import warnings

import pytest

# One torch thread per process: the suite starts DDP ranks and CLI subprocesses beside the test process, and
# on a 2-core machine spinning OpenMP threads of several processes slow each other down.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Tests never touch the user's cache of fitted tokenizers.
os.environ.setdefault("LDAE_CACHE", tempfile.mkdtemp(prefix="ldae-test-cache-"))
os.environ.setdefault("WANDB_MODE", "offline")
# Keep compiled bytecode even where the environment asks not to (PYTHONDONTWRITEBYTECODE, common in containers):
# the suite starts some fifty Python processes (xdist workers, CLI runs, DDP ranks) that each import torch and
# Lightning, and without .pyc files each of them compiles those ~4,000 modules again (~16 s of CPU apiece here).
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False
warnings.filterwarnings("ignore", category=DeprecationWarning)


@pytest.fixture
def compose():
    """compose(*overrides) -> the composed `train` config, shrunk to `scale=smoke` unless a scale is given."""
    from ldae.cli import compose_config

    def _compose(*overrides: str, config_name: str = "train"):
        ov = list(overrides)
        if config_name == "train" and not any(o.startswith("scale=") for o in ov):
            ov.append("scale=smoke")
        return compose_config(ov, config_name)

    return _compose


@pytest.fixture(autouse=True)
def _wandb_failure_is_per_test():
    """ldae.wandb_logger remembers a failed wandb start for the rest of the process; a test's failure must not
    disable wandb in the next test."""
    yield
    mod = sys.modules.get("ldae.wandb_logger")
    if mod is not None:
        mod.forget_wandb_failure()
