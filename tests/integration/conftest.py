"""Fixtures of the in-process pipeline runs."""

import pytest


@pytest.fixture(scope="package")
def smoke_run(tmp_path_factory):
    """`ldae-train experiment=ldae scale=smoke` in process, trained once for every test here that reads a finished
    run: (run folder, results). Its readers only read the folder and the checkpoint (each evaluation writes into
    its own tmp_path), so they can share it; a test that writes into its run, or needs other overrides, trains
    its own."""
    from ldae.cli import compose_config
    from ldae.train import run

    out = tmp_path_factory.mktemp("smoke_run")
    return out, run(compose_config(["experiment=ldae", "scale=smoke"]), out)
