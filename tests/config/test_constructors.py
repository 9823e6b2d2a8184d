"""Defaults live in YAML only: each component is built from its shipped config node, and a node key that its
constructor does not take (unused) or a constructor argument the node lacks (missing) fails here."""

import inspect

import pytest
import torch
from helpers import ROOT
from omegaconf import OmegaConf

from ldae.checkpoints import STORED_CONFIG_UPGRADES
from ldae.cli import compose_config
from ldae.lit.tokenizer import TokenizerTrainModule, fit_trainable
from ldae.tokenizers import CONV_VAE_KEYS, LOSS_KEYS, STAGE_KEYS, TRAIN_KEYS, TrainableTokenizer, build_tokenizer
from ldae.tokenizers.losses import LPIPS, AutoencoderLoss, PatchDiscriminator

CONF = ROOT / "conf"
# Every shipped tokenizer option but the plug-in template (its constructor is the user's).
TOKENIZERS = sorted(p.stem for p in (CONF / "tokenizer").glob("*.yaml") if p.stem != "plugin")


def _params(fn, skip=()) -> set[str]:
    """The named arguments of `fn` (not self, *args, **kw, nor those in `skip`)."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {n for n, p in inspect.signature(fn).parameters.items() if p.kind in kinds and n != "self"} - set(skip)


def _constructor_params(cls) -> set[str]:
    """The arguments of `cls` and of the ldae constructors its **kw reaches (TrainableTokenizer, Tokenizer)."""
    out = set()
    for c in cls.__mro__:
        if c.__module__.startswith("ldae.") and "__init__" in vars(c):
            out |= _params(c.__init__)
    # channels: images have 3 (not a config key); spec: the whole node, for the fingerprint;
    # train/loss: assembled from the node by TRAIN_KEYS/LOSS_KEYS; latent_dim: the plan's effective d.
    return out - {"channels", "spec", "train", "loss", "latent_dim"}


def _tokenizer_node(option: str, scale: str = "smoke") -> dict:
    cfg = compose_config(["experiment=ldae", f"scale={scale}", f"tokenizer={option}"])
    return OmegaConf.to_container(cfg.tokenizer, resolve=True)


@pytest.mark.parametrize("option", TOKENIZERS)
def test_each_tokenizer_node_holds_exactly_its_constructors_arguments(option):
    # scale=cpu: scale=smoke also sets tokenizer.num_patches (PCA's budget), which every other option then carries
    node = _tokenizer_node(option, "cpu")
    tok = build_tokenizer(OmegaConf.create(node))  # every key it reads is there (no fallback is left)
    want = _constructor_params(type(tok))
    if isinstance(tok, TrainableTokenizer):
        want |= set(TRAIN_KEYS) | set(LOSS_KEYS)
    stage = set(STAGE_KEYS) & set(node)
    assert set(node) - stage == want - stage, (sorted(set(node) - want - stage), sorted(want - set(node)))


@pytest.mark.parametrize("option", [o for o in TOKENIZERS if o not in ("none", "patch_pca")])
def test_the_loss_node_builds_the_autoencoder_loss(option):
    node = _tokenizer_node(option)
    assert set(LOSS_KEYS.values()) == _params(AutoencoderLoss.__init__)
    loss = AutoencoderLoss(**{arg: node[key] for key, arg in LOSS_KEYS.items()})
    per, adv = node["perceptual"], node["adversarial"]
    # A term at weight 0 is not built and may carry no other key; one that is on takes each of its keys.
    for sub, built, args in ((per, loss.lpips, _params(LPIPS.__init__)),
                             (adv, loss.disc, {"start"} | _params(PatchDiscriminator.__init__, skip={"in_channels"}))):
        assert (built is not None) == (sub["weight"] > 0)
        assert set(sub) == {"weight"} | args if sub["weight"] > 0 else set(sub) <= {"weight"} | args, sub


class _Reads(dict):
    """A dict that records which keys were read."""

    def __init__(self, *a):
        super().__init__(*a)
        self.read = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)


def test_the_tokenizer_train_node_is_read_whole_by_its_trainer():
    node = {**_tokenizer_node("patch_ae"), "train_steps": 1, "accelerator": "cpu"}
    train_args = _params(TokenizerTrainModule.__init__, skip={"tokenizer"})
    assert train_args <= set(TRAIN_KEYS.values())
    tok = build_tokenizer(OmegaConf.create(node))
    tok.train_cfg = _Reads(tok.train_cfg)
    x = torch.rand(8, 3, 8, 8) * 2 - 1
    fit_trainable(tok, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=4))
    # seed is read by the constructor (the initial orthonormal pair), every other key by the fit.
    assert tok.train_cfg.read == set(TRAIN_KEYS.values()) - {"seed"}
    other = build_tokenizer(OmegaConf.create({**node, "seed": 1}))
    assert not torch.equal(other.enc.weight, build_tokenizer(OmegaConf.create(node)).enc.weight)


def test_the_speed_node_is_read_whole_and_old_checkpoints_get_every_switch(monkeypatch):
    from ldae.lit import pretrain
    from ldae.speed import adamw_kwargs

    cfg = compose_config(["experiment=ldae", "scale=smoke"])
    node = OmegaConf.to_container(cfg.speed, resolve=True)
    assert set(node) == set(STORED_CONFIG_UPGRADES["speed"])
    # compile on (the eager backend: nn.Module.compile only wraps the call) so its mode and backend are read too
    seen = _Reads({**node, "compile": True, "compile_backend": "eager"})
    monkeypatch.setattr(pretrain, "speed_of", lambda c: seen)
    was = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision())
    try:
        module = pretrain.PretrainModule(OmegaConf.to_container(cfg, resolve=True))
        module.setup("fit")
        adamw_kwargs(module.speed, False)  # what configure_optimizers calls (CPU parameters)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = was[0], was[1]
        torch.set_float32_matmul_precision(was[2])
    assert seen.read == set(node), sorted(set(node) - seen.read)


def test_conv_vae_keys_are_its_own_arguments():
    from ldae.tokenizers.vqgan import ConvVAE

    assert set(CONV_VAE_KEYS) == _params(ConvVAE.__init__, skip={"patch_size", "latent_dim"})


class _NodeReads(_Reads):
    """A config node (attribute or item access, .get) that records the keys read; `_target_` (the plug-in probe)
    is not a key of a built-in node."""

    def __getattr__(self, key):
        return self[key]

    def get(self, key, default=None):
        if key == "_target_":
            return super().get(key, default)
        return self[key] if key in self else default


def test_the_model_node_is_read_whole_and_sets_every_backbone_argument(monkeypatch):
    """conf/model/dit.yaml -> build_backbone (+ the plan's patch) -> DiT: every node key is read, and every DiT
    argument is passed, so no keyword default of DiT is reached from a config; a missing key fails."""
    from ldae.models import build_backbone, dit
    from ldae.plan import model_patch

    real, passed = dit.DiT, {}

    class Recorder:
        def __init__(self, **kw):
            passed.update(kw)

    monkeypatch.setattr(dit, "DiT", Recorder)
    cfg = compose_config(["experiment=ldae", "scale=smoke"])
    plain = OmegaConf.to_container(cfg.model, resolve=True)
    node = _NodeReads(plain)
    build_backbone(node, input_size=8, patch_size=model_patch(node) or 2, in_channels=4, out_channels=4)
    assert node.read == set(node), sorted(set(node) - node.read)
    assert set(passed) == _params(real.__init__), sorted(_params(real.__init__) ^ set(passed))
    for key in sorted(set(plain) - {"patch_size"}):  # the plan reads patch_size (None there: the tokenizer's)
        with pytest.raises(KeyError):
            build_backbone(_NodeReads({k: v for k, v in plain.items() if k != key}), 8, 2, 4, 4)
