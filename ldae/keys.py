"""Every config key ldae reads, declared: its type, and (where no hand-written rule of ldae/config.py owns it) its
range or allowed values. `check(cfg, KEYS)` runs before the cross-field rules, so no rule ever meets a value of
the wrong type, and tests/config/test_keys.py walks every leaf of the composed configs and fails on an undeclared one.

Torch-free, like ldae/config.py: a bad command line fails in about a second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fnmatch import fnmatchcase

from ldae.errors import ConfigError

_TYPE = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string", "list": "a list"}


@dataclass(frozen=True)
class Key:
    kind: str                       # int | float | bool | str | list | any
    lo: float | None = None         # inclusive bounds of a number (of each item of a list)
    hi: float | None = None
    gt: float | None = None         # exclusive lower bound
    allowed: tuple = ()             # the allowed values
    null: bool = False              # null is allowed
    item: str | None = None         # a list's item kind
    size: int | None = None         # a list's length
    rule: bool = False              # range/values owned by a rule of ldae/config.py (its own message): type only

    def problem(self, v) -> str | None:
        """None when `v` is allowed, else what is allowed (the end of the one-line message)."""
        if self.kind == "any" and not self.allowed and not self.rule:
            return None  # declared free (a plug-in's block, a script's override table)
        if v is None:
            return None if self.null else self._what()
        if self.kind == "list":
            if not isinstance(v, (list, tuple)):
                return self._what()
            if self.size is not None and len(v) != self.size:
                return self._what()
            item = Key(self.item or "any", self.lo, self.hi, self.gt, self.allowed)
            return self._what() if any(item.problem(x) for x in v) else None
        if not _is_kind(v, self.kind):
            return self._what()
        if self.rule:
            return None
        if self.allowed and v not in self.allowed:
            return self._what()
        if self.kind in ("int", "float") and not (
                math.isfinite(v) and (self.lo is None or v >= self.lo) and (self.hi is None or v <= self.hi)
                and (self.gt is None or v > self.gt)):
            return self._what()
        return None

    def _what(self) -> str:
        if self.allowed and not self.rule:
            what = "one of " + ", ".join(_show(a) for a in self.allowed)
        else:
            what = _TYPE.get(self.kind, "a value")
            if self.kind == "list":
                what = f"a list of {self.size} " if self.size else "a list of "
                what += {"int": "integers", "float": "numbers", "str": "strings"}.get(self.item, "values")
            what += _bounds(self)
        return what + (" or null" if self.null else "")


def _bounds(k: Key) -> str:
    if k.rule:
        return ""
    parts = ([f"> {_show(k.gt)}"] if k.gt is not None else []) + ([f">= {_show(k.lo)}"] if k.lo is not None else [])
    parts += [f"<= {_show(k.hi)}"] if k.hi is not None else []
    return (" " + " and ".join(parts)) if parts else ""


def _show(v) -> str:
    return {True: "true", False: "false", None: "null"}.get(v, str(v)) if isinstance(v, (bool, type(None))) else str(v)


def _is_kind(v, kind: str) -> bool:
    if kind == "bool":
        return isinstance(v, bool)
    if kind == "int":
        return isinstance(v, int) and not isinstance(v, bool)
    if kind == "float":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if kind == "str":
        return isinstance(v, str)
    return True


def Int(lo=None, hi=None, null=False, rule=False, allowed=()):
    return Key("int", lo=lo, hi=hi, null=null, rule=rule, allowed=allowed)


def Float(lo=None, hi=None, gt=None, null=False, rule=False):
    return Key("float", lo=lo, hi=hi, gt=gt, null=null, rule=rule)


def Bool(null=False):
    return Key("bool", null=null)


def Str(null=False, rule=False, allowed=()):
    return Key("str", null=null, rule=rule, allowed=tuple(allowed))


def Choice(*allowed, null=False):
    return Key("any", allowed=tuple(allowed), null=null)


def List(item, lo=None, hi=None, size=None, null=False):
    return Key("list", item=item, lo=lo, hi=hi, size=size, null=null)


def _data(prefix: str) -> dict[str, Key]:
    """The keys of a data node (conf/data/*.yaml), for `data` and `probe_data`."""
    return {f"{prefix}.{k}": v for k, v in {
        "name": Str(rule=True), "root": Str(null=True), "image_size": Int(rule=True),
        "num_classes": Int(rule=True), "labels": Bool(), "num_train": Int(rule=True, null=True),
        "num_val": Int(rule=True, null=True), "seed": Int(lo=0), "difficulty": Float(gt=0),
        "batch_size": Int(rule=True), "device_batch_size": Int(rule=True, null=True), "num_workers": Int(rule=True),
        "crop": Str(rule=True), "crop_min_scale": Float(gt=0, hi=1), "hflip": Bool(), "download": Bool(), "stand_in": Bool(),
    }.items()}


# ldae-train's keys (conf/train.yaml and its groups); ldae-probe reads the same names (conf/eval.yaml).
TRAIN: dict[str, Key] = {
    "name": Str(), "family": Str(null=True), "point": Key("any", null=True), "scale_name": Str(),
    "seed": Int(rule=True), "ckpt_path": Str(null=True), "output_dir": Str(null=True), "resume": Str(rule=True),
    "baselines": Bool(), "paths.cache_dir": Str(),
    "checkpoint.every_n_steps": Int(rule=True, null=True),
    **_data("data"), **_data("probe_data"),
    # tokenizer: every tokenizer's keys (conf/tokenizer/*.yaml); rules of config._validate_tokenizer own most
    "tokenizer.name": Str(rule=True), "tokenizer.patch_size": Int(rule=True), "tokenizer.latent_dim": Int(rule=True),
    "tokenizer.latent_units": Str(rule=True), "tokenizer.center": Bool(), "tokenizer.scaling": Str(rule=True),
    "tokenizer.num_patches": Int(lo=1), "tokenizer.fit_images": Int(lo=1), "tokenizer.seed": Int(lo=0),
    "tokenizer.cache": Bool(), "tokenizer.latent_cache": Bool(), "tokenizer.dit_patch": Int(lo=1),
    "tokenizer.kl_weight": Float(lo=0), "tokenizer.betas": List("float", lo=0, hi=1, size=2),
    "tokenizer.lr": Float(gt=0), "tokenizer.train_batch_size": Int(lo=1), "tokenizer.train_steps": Int(lo=0),
    "tokenizer.weight_decay": Float(lo=0), "tokenizer.disc_lr": Float(gt=0, null=True),
    "tokenizer.accelerator": Str(), "tokenizer.precision": Str(),
    "tokenizer.block_channels": List("int", lo=1), "tokenizer.layers_per_block": Int(lo=1),
    "tokenizer.norm_groups": Int(lo=1), "tokenizer.norm_batches": Int(lo=1), "tokenizer.mid_attention": Bool(),
    "tokenizer.normalize": Str(rule=True), "tokenizer.posterior": Str(rule=True),
    "tokenizer.recon_loss": Str(rule=True), "tokenizer.pretrained_path": Str(null=True),
    "tokenizer.perceptual.weight": Float(lo=0, rule=True), "tokenizer.perceptual.backbone_path": Str(null=True),
    "tokenizer.perceptual.linear_path": Str(null=True), "tokenizer.perceptual.random_backbone": Bool(),
    "tokenizer.adversarial.weight": Float(lo=0), "tokenizer.adversarial.start": Int(lo=0),
    "tokenizer.adversarial.channels": Int(lo=1), "tokenizer.adversarial.layers": Int(lo=1),
    "tokenizer._target_": Str(),
    # tokenizer_scale: the trained tokenizers' sizes a scale sets (interpolated into tokenizer.*)
    "tokenizer_scale.batch_size": Int(lo=1), "tokenizer_scale.patch_steps": Int(lo=0),
    "tokenizer_scale.vqgan_steps": Int(lo=0), "tokenizer_scale.vqgan_lr": Float(gt=0),
    "tokenizer_scale.vqgan_channels": List("int", lo=1), "tokenizer_scale.vqgan_layers_per_block": Int(lo=1),
    "tokenizer_scale.vqgan_norm_groups": Int(lo=1), "tokenizer_scale.vqgan_pretrained_path": Str(null=True),
    "tokenizer_scale.random_backbone": Bool(), "tokenizer_scale.disc_start": Int(lo=0),
    "tokenizer_scale.disc_channels": Int(lo=1), "tokenizer_scale.disc_layers": Int(lo=1),
    # model (conf/model/dit.yaml)
    "model.name": Str(rule=True), "model.hidden_size": Int(rule=True, null=True), "model.depth": Int(rule=True, null=True),
    "model.num_heads": Int(rule=True, null=True), "model.encoder_depth": Int(rule=True, null=True),
    "model.patch_size": Int(rule=True, null=True), "model.mlp_ratio": Float(gt=0), "model.cond_ratio": Float(gt=0),
    "model.class_cond": Bool(), "model.class_dropout": Float(lo=0, hi=1, rule=True), "model.learn_sigma": Bool(),
    "model.adaln_zero": Bool(), "model._target_": Str(),
    # schedule, target
    "schedule.name": Str(rule=True), "schedule.num_steps": Int(lo=1), "schedule.sigma_value": Float(gt=0),
    "schedule._target_": Str(),
    "target.predict": Str(rule=True), "target.input": Str(rule=True), "target.lambda_t": Str(rule=True),
    "target.residual_weight": Float(lo=0), "target.output_basis": Str(rule=True),
    # optim (conf/optim/adamw.yaml)
    "optim.name": Choice("adamw"), "optim.base_lr": Float(rule=True), "optim.betas": List("float", lo=0, hi=1, size=2),
    "optim.weight_decay": Float(lo=0), "optim.warmup_epochs": Float(lo=0), "optim.min_lr": Float(lo=0),
    "optim.ema": Bool(), "optim.ema_decay": Float(lo=0, hi=1), "optim.ema_warmup": Bool(),
    "optim.gradient_clip": Float(rule=True, null=True), "optim.on_nonfinite": Str(rule=True),
    # trainer: Lightning's Trainer arguments ldae passes on
    "trainer.accelerator": Choice("auto", "cpu", "gpu", "cuda", "mps", "tpu"), "trainer.strategy": Str(),
    "trainer.devices": Key("any", rule=True), "trainer.num_nodes": Int(rule=True),
    "trainer.precision": Key("any", rule=True), "trainer.max_epochs": Int(rule=True),
    "trainer.log_every_n_steps": Int(lo=1), "trainer.deterministic": Choice(True, False, "warn"),
    "trainer.enable_progress_bar": Bool(), "trainer.enable_model_summary": Bool(),
    # logger
    "logger.wandb": Bool(), "logger.project": Str(), "logger.entity": Str(null=True),
    "logger.mode": Choice("auto", "online", "offline", "disabled"), "logger.group": Str(null=True),
    "logger.tags": List("str"),
    # probe (conf/probe/{linear,knn,finetune}.yaml): config._validate_probe owns most
    "probe.name": Str(rule=True), "probe.t": Int(rule=True), "probe.t_offset": Int(rule=True),
    "probe.noisy": Bool(), "probe.use_ema": Bool(), "probe.block": Int(rule=True, null=True),
    "probe.pool": Str(rule=True), "probe.clean_input": Str(rule=True), "probe.optimizer": Str(rule=True),
    "probe.lr_source": Str(rule=True), "probe.lr_presets.*": Float(gt=0), "probe.base_lr": Float(rule=True),
    "probe.momentum": Float(lo=0, hi=1), "probe.weight_decay": Float(lo=0), "probe.epochs": Int(rule=True),
    "probe.warmup_epochs": Float(lo=0), "probe.batch_size": Int(rule=True),
    "probe.device_batch_size": Int(lo=1, null=True), "probe.augment": Bool(),
    "probe.crop_min_scale": Float(gt=0, hi=1), "probe.cache_features": Bool(), "probe.disk_cache": Bool(),
    "probe.num_train": Int(lo=1, null=True), "probe.num_val": Int(lo=1, null=True),
    "probe.feature_batch_size": Int(lo=1), "probe.k": Int(rule=True), "probe.temperature": Float(rule=True),
    "probe.drop_path": Float(lo=0, hi=1), "probe.ema": Bool(), "probe.ema_decay": Float(lo=0, hi=1),
    "probe.label_smoothing": Float(lo=0, hi=1), "probe.layer_decay": Float(gt=0, hi=1),
    "probe.min_lr": Float(lo=0), "probe.mixup": Float(lo=0), "probe.cutmix": Float(lo=0),
    "probe.rand_augment": Str(null=True), "probe.reprob": Float(lo=0, hi=1),
    "online_probe.enabled": Bool(), "online_probe.t": Int(lo=0), "online_probe.lr": Float(gt=0),
    # generation and pictures
    "gen.enabled": Bool(), "gen.sampler": Str(rule=True), "gen.steps": Int(lo=1), "gen.eta": Float(lo=0, hi=1),
    "gen.guidance_scale": Float(lo=0), "gen.guidance_channels": Str(rule=True), "gen.conditional": Bool(),
    "gen.t_offset": Int(), "gen.grid_samples": Int(lo=1), "gen.batch_size": Int(lo=1), "gen.seed": Int(lo=0),
    "gen.fid.num_samples": Int(lo=0), "gen.fid.feature": Choice(64, 192, 768, 2048),
    "gen.fid.inception_path": Str(null=True), "gen.fid.reference": Str(null=True, rule=True),
    "pictures.enabled": Bool(), "pictures.every_n_steps": Int(lo=1), "pictures.num_images": Int(lo=1),
    "pictures.num_bases": Int(lo=1), "pictures.sigmas": List("float", lo=0),
    # speed (ldae/speed.py owns its checks: a switch is a bool or auto)
    "speed.compile": Bool(), "speed.compile_backend": Str(), "speed.compile_mode": Str(), "speed.tf32": Bool(),
    "speed.fused_attention": Bool(), "speed.fused_adamw": Key("any", rule=True), "speed.ema_foreach": Bool(),
    "speed.activation_checkpointing": Bool(), "speed.channels_last": Bool(),
    # official=dit (conf/official/dit.yaml, ldae-probe)
    "official.*": Key("any"),
}

# The experiment scripts' own keys, beside the train keys their runs take (they compose train.yaml).
TRAJECTORY: dict[str, Key] = {
    "seeds": Int(lo=1), "steps": List("int", lo=0, hi=12, null=True), "baselines_once": Bool(),
    "budget.*": Key("any"),  # per-scale override blocks: each key is a train key, checked in each row's config
}
CLAIMS: dict[str, Key] = {
    "claims": List("any", null=True), "seeds": Int(lo=1), "tol": Float(lo=0), "budget_name": Str(),
    "budget.*": Key("any"),
}
BENCH: dict[str, Key] = {
    "bench.variants": List("str"), "bench.steps": Int(lo=1), "bench.warmup": Int(lo=0), "bench.repeats": Int(lo=1),
    "bench.batch_size": Int(lo=1, null=True), "bench.matmul_size": Int(lo=1, null=True), "bench.loader": Bool(),
    "bench.loader_workers": List("int", lo=0), "bench.loader_images": Int(lo=1),
    "bench.loader_source_size": Int(lo=1, null=True), "bench.switches.*": Key("any"),
}


def declaration(key: str, table: dict[str, Key]) -> Key | None:
    if key in table:
        return table[key]
    return next((k for pat, k in table.items() if "*" in pat and fnmatchcase(key, pat)), None)


def leaves(node, prefix: str = "") -> list[str]:
    """The dotted keys of every leaf (a list is one leaf)."""
    return [k for k, _, _ in _leaf_nodes(node, prefix)]


def _leaf_nodes(node, prefix: str = ""):
    """(dotted key, parent, name) of every leaf, walked node by node: a key may itself hold a dot
    (bench.switches), so values are read as parent[name] (which resolves interpolations), not by select."""
    from omegaconf import OmegaConf

    for k in node.keys():
        child = node._get_node(k)
        key = f"{prefix}{k}"
        if OmegaConf.is_dict(child):
            yield from _leaf_nodes(child, key + ".")
        else:
            yield key, node, k


def check(cfg, table: dict[str, Key], what: str = "") -> None:
    """Raise ConfigError for the first leaf of `cfg` whose value its declaration refuses (undeclared keys are
    the test's business: a user's `+key=` is a plug-in's argument)."""
    from omegaconf import OmegaConf

    for key, parent, name in _leaf_nodes(cfg):
        decl = declaration(key, table)
        if decl is None or (decl.kind == "any" and not decl.allowed and not decl.rule):
            continue
        v = parent[name]
        if OmegaConf.is_config(v):
            v = OmegaConf.to_container(v, resolve=True)
        why = decl.problem(v)
        if why is not None:
            raise ConfigError(f"{key}={_show(v) if not isinstance(v, list) else v} must be {why}")


__all__ = ["Key", "TRAIN", "TRAJECTORY", "CLAIMS", "BENCH", "check", "declaration", "leaves"]
