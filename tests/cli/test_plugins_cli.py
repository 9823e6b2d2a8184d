"""A user's plug-in refused by the real CLI: one line, exit 2 (tests/integration/test_plugins.py trains them)."""

import os

from helpers import PLUGINS, plugin_user_conf, run_cli


def test_a_plugin_without_a_required_method_is_refused_in_one_line(tmp_path):
    user = f"hydra.searchpath=[file://{plugin_user_conf(tmp_path)}]"  # the child finds mypkg on its PYTHONPATH
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONPATH": os.pathsep.join(
        [str(PLUGINS), os.environ.get("PYTHONPATH", "")])}
    r = run_cli("ldae-train", user, "scale=smoke", "tokenizer=nodecoder", cwd=tmp_path, env=env,
                timeout=600)  # a slow shared machine: the precheck alone imports torch
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        "ldae-train: error: tokenizer._target_=mypkg.tokenizers.NoDecoder is not a tokenizer: it lacks decode; "
        "a tokenizer plug-in needs encode(x) -> z, decode(z) -> x and latent_dim (the per-token d)"]
