"""Every key ldae reads is declared (ldae/keys.py) and its declaration is enforced: the walk over every leaf of
the composed train, eval, trajectory, claims and bench configs fails on an undeclared key, and each declared key
given a value of the wrong type, out of range or not allowed is refused with one ConfigError line naming it."""

import copy

import pytest
from omegaconf import OmegaConf, open_dict

from ldae import keys
from ldae.cli import compose_config
from ldae.config import ConfigError, validate

# Group choices whose nodes add keys of their own: each composed once, so each of their leaves is walked.
TRAIN_VARIANTS = [[], ["tokenizer=vqgan"], ["tokenizer=patch_vae"], ["tokenizer=conv_vae"], ["tokenizer=none"],
                  ["probe=knn"], ["probe=finetune"], ["trainer=ddp"], ["data=imagefolder", "data.root=/x"],
                  ["data=fashion_mnist"], ["data=cifar10"], ["logger=wandb"], ["probe_data=shapes"],
                  ["schedule=single_level"], ["target=eps"], ["gen.enabled=true"],
                  ["experiment=trajectory/00_dit_baseline"], ["scale=cpu"], ["scale=mid"], ["scale=paper"]]
SCRIPTS = {"trajectory": keys.TRAJECTORY, "claims": keys.CLAIMS, "bench": keys.BENCH}


def _train(*ov):
    ov = list(ov)
    base = [] if any(o.startswith("experiment=") for o in ov) else ["experiment=ldae"]
    scale = [] if any(o.startswith("scale=") for o in ov) else ["scale=smoke"]
    return compose_config(base + scale + ov)


def _undeclared(cfg, table) -> list[str]:
    return [k for k in keys.leaves(cfg) if keys.declaration(k, table) is None]


@pytest.mark.parametrize("ov", TRAIN_VARIANTS, ids=lambda ov: ",".join(ov) or "default")
def test_every_leaf_of_a_train_config_is_declared(ov):
    assert _undeclared(_train(*ov), keys.TRAIN) == []


def test_every_leaf_of_the_eval_and_script_configs_is_declared():
    ev = compose_config(["ckpt_path=x", "official=dit"], "eval")
    assert _undeclared(ev, keys.TRAIN) == []
    for name, own in SCRIPTS.items():
        cfg = compose_config(["scale=smoke"], name)
        assert _undeclared(cfg, {**keys.TRAIN, **own}) == [], name


def _bad_values(decl: keys.Key) -> list:
    """Values the declaration must refuse: the wrong type always; beyond each bound; a name not allowed."""
    if decl.kind == "any" and not decl.allowed:
        return []
    wrong = {"int": ["abc", 1.5], "float": ["abc"], "bool": ["maybe", 1], "str": [123], "list": ["abc"],
             "any": ["__bogus__"]}[decl.kind]
    if decl.rule:
        return wrong
    out = list(wrong)
    step = 1 if decl.kind == "int" else 1e-3
    if decl.lo is not None and decl.kind != "list":
        out.append(decl.lo - step)
    if decl.hi is not None and decl.kind != "list":
        out.append(decl.hi + step)
    if decl.gt is not None:
        out.append(decl.gt)
    if decl.kind == "list" and decl.lo is not None:
        out.append([decl.lo - 1])
    if decl.kind == "list" and decl.size:
        out.append([decl.lo if decl.lo is not None else 0] * (decl.size + 1))
    if decl.allowed and decl.kind == "str":
        out.append("__bogus__")
    return out


def _declared_leaves(cfg) -> list[tuple[str, keys.Key]]:
    return [(k, d) for k in keys.leaves(cfg) if (d := keys.declaration(k, keys.TRAIN)) is not None]


@pytest.mark.parametrize("ov", [[], ["tokenizer=vqgan", "logger=wandb"], ["probe=finetune", "schedule=single_level"],
                                ["probe=knn", "probe_data=shapes"]],
                         ids=lambda ov: ",".join(ov) or "default")
def test_each_declared_key_refuses_bad_values_in_one_line_naming_it(ov):
    cfg = _train(*ov)
    validate(cfg)
    tried = 0
    for key, decl in _declared_leaves(cfg):
        for bad in _bad_values(decl):
            c = copy.deepcopy(cfg)
            with open_dict(c):
                OmegaConf.update(c, key, bad, merge=False)
            with pytest.raises(ConfigError) as e:
                validate(c)
            msg = str(e.value)
            assert "\n" not in msg, (key, bad, msg)
            # the key's name, or (a name registry's rule) its group: "unknown schedule 'x'; allowed: ..."
            assert key in msg or key.rsplit(".", 1)[0] in msg, (key, bad, msg)
            tried += 1
    assert tried > 150


def test_the_message_says_what_is_allowed(compose):
    with pytest.raises(ConfigError, match=r"^schedule.num_steps=abc must be an integer >= 1$"):
        validate(compose("schedule.num_steps=abc"))
    with pytest.raises(ConfigError, match=r"^optim.betas=\[0.9\] must be a list of 2 numbers >= 0 and <= 1$"):
        validate(compose("optim.betas=[0.9]"))
    with pytest.raises(ConfigError, match=r"^logger.mode=sometimes must be one of auto, online, offline, disabled$"):
        validate(compose("logger=wandb", "logger.mode=sometimes"))
    with pytest.raises(ConfigError, match=r"^probe.device_batch_size=0 must be an integer >= 1 or null$"):
        validate(compose("probe=finetune", "probe.device_batch_size=0"))
    with pytest.raises(ConfigError, match=r"^optim.base_lr=abc must be a number$"):  # a rule owns its range
        validate(compose("optim.base_lr=abc"))


def test_script_keys_are_checked_by_their_scripts():
    from ldae.bench import check_config

    cfg = compose_config(["scale=smoke", "bench.steps=0"], "bench")
    with pytest.raises(ConfigError, match=r"^bench.steps=0 must be an integer >= 1$"):
        check_config(cfg)
    cfg = compose_config(["scale=smoke", "bench.variants=[base,bf16]", "trainer.precision=16-mixed"], "bench")
    with pytest.raises(ConfigError, match=r"bench times trainer.precision 32-true or bf16-mixed, got '16-mixed'"):
        check_config(cfg)
    cfg = compose_config(["scale=smoke", "data.num_workers=-1"], "bench")
    with pytest.raises(ConfigError, match=r"^data.num_workers=-1 must be an integer >= 0"):
        check_config(cfg)
    check_config(compose_config(["scale=smoke", "bench.variants=[base,compile_eager,bf16]"], "bench"))


def test_trajectory_and_claims_check_their_declared_keys(tmp_path):
    from ldae.report.claims import run_claims
    from ldae.report.trajectory import check_own_keys

    cfg = compose_config(["scale=smoke", "seeds=abc"], "claims")
    with pytest.raises(ConfigError, match=r"^seeds=abc must be an integer >= 1$"):
        run_claims(cfg, tmp_path / "claims", [], [], "")
    cfg = compose_config(["scale=smoke", "tol=-1"], "claims")
    with pytest.raises(ConfigError, match=r"^tol=-1 must be a number >= 0$"):
        run_claims(cfg, tmp_path / "claims", [], [], "")
    assert not (tmp_path / "claims").exists()  # refused before any folder
    check_own_keys(compose_config(["scale=smoke"], "trajectory"))
