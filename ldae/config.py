"""Config checks that run before any work: every value a run depends on, each failing with a one-line ConfigError.
Composing a config and printing the error are the CLI's (ldae/cli.py)."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ldae import plan, rules
from ldae.rules import is_int, require
from ldae.errors import ConfigError  # noqa: F401  raised here, and imported from here by the CLIs and tests


def require_complete(cfg: DictConfig) -> None:
    """No `???` left: name the first missing key."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    require(not missing, f"missing required value '{missing[0]}' (set it on the command line: {missing[0]}=...)"
            if missing else "")


def validate(cfg: DictConfig) -> None:
    """Check the values a run depends on before it starts; raise ConfigError naming the first bad one."""
    from ldae import keys
    from ldae.choices import (CROPS, DATASETS, GUIDANCE_CHANNELS, INPUTS, LAMBDAS, NONFINITE_ACTIONS, RESUME_MODES,
                              SAMPLERS, SCHEDULES, TOKENIZERS, check)
    from ldae.diffusion.predictions import PREDICTION, names
    from ldae.extras import check_config_extras
    from ldae.models.registry import lookup

    require_complete(cfg)
    _validate_basics(cfg)
    keys.check(cfg, keys.TRAIN)  # every declared key's type (and range where no rule below owns it)
    d, tok = cfg.data, cfg.tokenizer
    # A node with `_target_` is a user's part (ldae/plugins.py): no name registry, the interface check instead.
    _check_part(d, "data", DATASETS)
    _check_part(tok, "tokenizer", TOKENIZERS)
    _check_part(cfg.schedule, "schedule", SCHEDULES)
    require(isinstance(d.batch_size, int) and d.batch_size >= 1, f"data.batch_size={d.batch_size} must be an integer >= 1")
    require(isinstance(d.image_size, int) and d.image_size >= 1, f"data.image_size={d.image_size} must be an integer >= 1")
    check("data.crop", d.crop, CROPS)
    for key in ("num_train", "num_val"):
        v = d.get(key)
        require(v is None or (isinstance(v, int) and v >= 1), f"data.{key}={v} must be null or an integer >= 1")
    plan.token_grid(d.image_size, tok.patch_size)
    plan.resolve_latent_dim(tok)
    _validate_tokenizer(tok, d.image_size)
    if tok.get("latent_cache"):
        require(tok.name in ("vqgan", "patch_vae", "patch_ae"),
                f"tokenizer.latent_cache=true is for trained tokenizers; allowed: vqgan, patch_vae, patch_ae (got {tok.name})")
        latent = names(lambda p: p.space == "latent")  # the cache holds latents, not images
        require(cfg.target.input == "latent" and cfg.target.predict in latent,
                f"tokenizer.latent_cache=true needs a latent-space objective; allowed: target.input=latent with "
                f"target.predict={'|'.join(latent)} (got input={cfg.target.input}, predict={cfg.target.predict}: "
                f"they need the image)")
        require(d.crop == "center", f"tokenizer.latent_cache=true needs data.crop=center (got {d.crop}); the cache "
                f"holds both flips of center crops")
    o = cfg.optim
    require(isinstance(o.base_lr, (int, float)) and o.base_lr > 0, f"optim.base_lr={o.base_lr} must be > 0")
    require(o.gradient_clip is None or o.gradient_clip > 0,
            f"optim.gradient_clip={o.gradient_clip} must be null (no clipping) or > 0")
    require(o.on_nonfinite in NONFINITE_ACTIONS,
            f"unknown optim.on_nonfinite '{o.on_nonfinite}'; allowed: {', '.join(NONFINITE_ACTIONS)}")
    require(cfg.resume in RESUME_MODES, f"unknown resume '{cfg.resume}'; allowed: {', '.join(RESUME_MODES)}")
    every = cfg.checkpoint.every_n_steps
    require(every is None or (isinstance(every, int) and every >= 1),
            f"checkpoint.every_n_steps={every} must be null or an integer >= 1")
    require(bool(d.get("labels", True)) or not cfg.model.class_cond,
            f"model.class_cond=true needs labels, but data.labels=false for data={d.name}; "
            "set model.class_cond=false")
    pd = cfg.get("probe_data")
    if pd is not None:  # the probe's own labelled set (ldae.plan.probe_data)
        _check_part(pd, "probe_data", DATASETS)
        require(bool(pd.get("labels", True)), f"probe_data.labels=false: the probe needs labelled images "
                f"(probe_data={pd.name}); give a labelled dataset")
        _check_data_files(pd, "probe_data")
    else:
        require(bool(d.get("labels", True)), f"data.labels=false: the linear probe needs labelled images "
                f"(data={d.name}); give a labelled set to probe on with probe_data=NAME (e.g. "
                f"probe_data=fashion_mnist) or a labelled dataset")
    op = cfg.get("online_probe")
    require(bool(d.get("labels", True)) or op is None or not op.enabled,
            f"online_probe.enabled=true reads the pretraining labels, but data.labels=false for data={d.name}; "
            f"set online_probe.enabled=false")
    plan.pretrain_batches(cfg)
    require(o.warmup_epochs >= 0, f"optim.warmup_epochs={o.warmup_epochs} must be >= 0")
    me = cfg.trainer.get("max_epochs")
    require(isinstance(me, int) and me >= 1, f"trainer.max_epochs={me} must be an integer >= 1")
    t = cfg.target
    from ldae import choices

    decoder_free = names(lambda p: not p.needs_decoder)
    require(tok.name not in choices.NO_DECODER or (t.input == "latent" and t.predict in decoder_free),
            f"tokenizer={tok.name} has no decoder, but target.input={t.input} / target.predict={t.predict} need "
            f"one; allowed with it: target.input=latent and target.predict={'|'.join(decoder_free)}")
    check("target.predict", t.predict, PREDICTION)
    check("target.input", t.input, INPUTS)
    check("target.lambda_t", t.lambda_t, LAMBDAS)
    check("target.output_basis", t.output_basis, choices.OUTPUT_BASES)
    if t.output_basis == "tokenizer":
        require(PREDICTION[t.predict].space == "image",
                f"target.output_basis=tokenizer needs an image output; target.predict={t.predict}, allowed: image, image_pca")
        require(tok.name in choices.BASIS_TOKENIZERS, f"target.output_basis=tokenizer needs a tokenizer with an "
                f"orthonormal patch basis; tokenizer={tok.name}, allowed: {', '.join(choices.BASIS_TOKENIZERS)}")
    try:
        spec = lookup(cfg.model.name)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    m = cfg.model
    if m.get("_target_") is not None:
        _check_backbone_plugin(cfg)
    for key in ("depth", "hidden_size", "num_heads"):
        v = m.get(key)
        require(v is None or (is_int(v) and v >= 1), f"model.{key}={v} must be null (the registry's) or an integer >= 1")
    depth = m.depth if m.depth is not None else spec.depth
    rules.check_encoder_depth(m.encoder_depth, depth)
    plan.geometry(cfg)  # the token grid, the latent map and the backbone's patch agree
    rules.check_null_class(m.class_cond, m.class_dropout)
    if m.learn_sigma:
        rules.check_learned_sigma(t.predict, cfg.schedule.name)
    g = cfg.get("gen")
    if g is not None and g.enabled:
        require(g.sampler in SAMPLERS, f"unknown gen.sampler '{g.sampler}'; allowed: {', '.join(SAMPLERS)}")
        check("gen.guidance_channels", g.guidance_channels, GUIDANCE_CHANNELS)
        ref = g.fid.get("reference")
        if ref:  # an ADM/DiT .npz of real statistics: fail now, not after pretraining
            require(bool(g.fid.inception_path), f"gen.fid.reference={ref} needs gen.fid.inception_path (the "
                                                f"InceptionV3 weights that embed the generated images)")
            require(os.path.isfile(ref), f"gen.fid.reference={ref} does not exist (an .npz with arrays mu and sigma)")
    check_config_extras(cfg)
    _validate_probe(cfg.probe, cfg)
    _validate_speed(cfg.get("speed"))
    _check_data_files(d, "data")
    plan.resolve(cfg)


def _check_data_files(d: DictConfig, key: str) -> None:
    """Data on disk: fail now, not after an hour of set-up. key: the config node (data or probe_data)."""
    from ldae.choices import fashion_mnist_files

    if d.get("_target_") is not None:
        return  # a user's dataset finds its own files
    if d.name == "imagefolder":
        require(bool(d.root), f"{key}.root is required for {key}=imagefolder ({key}.root=/path/to/imagenet)")
        for split in ("train", "val"):
            require(os.path.isdir(os.path.join(d.root, split)),
                    f"{key}.root={d.root} has no '{split}' folder; expected ROOT/{split}/CLASS/*.JPEG")
            check_image_folder(d, split, key=key)
    elif d.name == "fashion_mnist" and not d.download:
        require(fashion_mnist_files(Path(d.root), "train") is not None,
                f"{key}.root={d.root} holds no Fashion-MNIST IDX files; install Debian's dataset-fashion-mnist "
                f"(files land in /usr/share/datasets/fashion-mnist) or set {key}.download=true")
    elif d.name == "cifar10" and not d.download:
        require(os.path.isdir(os.path.join(d.root, "cifar-10-batches-py")),
                f"{key}.root={d.root} holds no cifar-10-batches-py folder; set {key}.download=true to fetch it")


def _check_part(node, group: str, builtin: tuple[str, ...]) -> None:
    """A built-in part: its name is one of `builtin`. A user's part (`_target_`): a name of its own (runs, artifacts
    and logs are called by it; a built-in's name would select the built-in's special cases), a target that
    imports and, for a class, has the interface's methods."""
    name = node.get("name")
    if node.get("_target_") is None:
        require(name in builtin, f"unknown {group} '{name}'; allowed: {', '.join(builtin)}, or a _target_ "
                                 f"(your own {group}, README 'Your own parts')")
        return
    require(isinstance(name, str) and bool(name) and name not in builtin,
            f"{group}.name={name} for {group}._target_={node.get('_target_')}: a plug-in needs a name of its own; "
            f"allowed: any name but {', '.join(builtin)}")
    from ldae import plugins

    plugins.check_class(node, group)


def _check_backbone_plugin(cfg: DictConfig) -> None:
    """A user's backbone (model._target_): the interface, and no feature that reads DiT's own blocks."""
    from ldae import plugins

    target = cfg.model.get("_target_")
    plugins.check_class(cfg.model, "model")
    require(cfg.probe.name != "finetune", f"probe=finetune folds ldae's DiT into a timm ViT; model._target_={target} "
                                          f"is a backbone of your own; allowed with it: probe=linear, probe=knn")
    if cfg.get("speed") is not None and cfg.speed.get("activation_checkpointing"):
        require(hasattr(plugins.locate(cfg.model, "model"), "set_grad_checkpointing"),
                f"speed.activation_checkpointing=true needs set_grad_checkpointing(enable) on model._target_="
                f"{target}; allowed: speed.activation_checkpointing=false, or add the method")


def _devices_ok(v) -> bool:
    if is_int(v):
        return v >= 1 or v == -1
    if isinstance(v, (list, tuple)) or OmegaConf.is_list(v):
        return len(v) > 0 and all(is_int(x) and x >= 0 for x in v)
    if isinstance(v, str):
        parts = [x.strip() for x in v.split(",") if x.strip()]
        return v.strip() in ("auto", "-1") or (bool(parts) and all(x.isdigit() for x in parts))
    return False


def _validate_basics(cfg: DictConfig) -> None:
    """Keys every run reads, before anything derives from them: the seed, switches, workers, the trainer's devices,
    nodes and precision (Lightning would reject a bad one only after the tokenizer fit)."""
    from ldae.choices import PRECISIONS

    require(is_int(cfg.seed) and cfg.seed >= 0, f"seed={cfg.seed} must be an integer >= 0")
    # The switches (data.hflip, model.class_cond, ...) are Bool() declarations of ldae/keys.py, checked next.
    d = cfg.data
    nw = d.num_workers
    require(is_int(nw) and nw >= 0, f"data.num_workers={nw} must be an integer >= 0 (0: load in the main process)")
    nc = d.num_classes
    require(is_int(nc) and nc >= 2, f"data.num_classes={nc} must be an integer >= 2")
    if d.name == "shapes" and not d.get("stand_in"):  # a stand-in (official=dit) is never drawn
        from ldae.choices import SHAPES_MAX_CLASSES

        require(nc <= SHAPES_MAX_CLASSES, f"data.num_classes={nc} is out of range for data=shapes; allowed: "
                                          f"2..{SHAPES_MAX_CLASSES} (the shapes it draws)")
    dbs = d.get("device_batch_size")
    require(dbs is None or (is_int(dbs) and dbs >= 1), f"data.device_batch_size={dbs} must be null or an integer >= 1")
    t = cfg.trainer
    require(_devices_ok(t.get("devices", 1)), f"trainer.devices={t.get('devices')} is not a device count; allowed: "
            f"an integer >= 1, -1 or auto (every visible device), a list of indices [0,1], or '0,1'")
    nn = t.get("num_nodes", 1)
    require(is_int(nn) and nn >= 1, f"trainer.num_nodes={nn} must be an integer >= 1")
    prec = t.get("precision", "32-true")
    require(prec in PRECISIONS, f"unknown trainer.precision '{prec}'; allowed: "
            f"{', '.join(str(p) for p in PRECISIONS if isinstance(p, str))}")


def _sample_files(folder: Path, k: int, seed: int = 0) -> list[Path]:
    """Up to k image files of `folder`, one from each of k seeded-random class folders (or the tree's first k when
    it has no subfolders): a readability test that does not list a million files twice."""
    import random

    from ldae.choices import IMAGE_EXTENSIONS

    subs = sorted(p for p in folder.iterdir() if p.is_dir())
    pools = random.Random(seed).sample(subs, min(k, len(subs))) if subs else [folder]
    out: list[Path] = []
    for sub in pools:
        files = [p for p in sub.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
        if files:
            out += random.Random(seed).sample(files, min(len(files), max(1, k // len(pools))))
    return out[:k]


def check_image_folder(d: DictConfig, split: str, sample: int = 8, key: str = "data") -> None:
    """An image folder's split before any work: its class folders match data.num_classes (the probe head's width),
    and a seeded sample of its files decodes (a folder of unreadable files would fail inside a loader worker)."""
    folder = Path(d.root) / split
    if d.get("labels", True):
        classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
        require(len(classes) == d.num_classes,
                f"{key}.num_classes={d.num_classes} but {folder} holds {len(classes)} class folder(s); allowed: "
                f"{key}.num_classes={len(classes)}" if classes else
                f"no class folders in {folder}: expected {folder}/CLASS/*.JPEG (or {key}.labels=false for a folder "
                f"of unlabelled images)")
    files = _sample_files(folder, sample)
    require(bool(files), f"no images in {folder} (the {split} split is empty)")
    from PIL import Image

    errors = []
    for f in files:
        try:
            with Image.open(f) as im:
                im.convert("RGB")
            return  # one readable file is enough here: the loader skips (and counts) the unreadable rest
        except Exception as e:  # noqa: BLE001 - PIL raises many kinds; any of them means unreadable
            errors.append(f"{f.name}: {type(e).__name__}")
    raise ConfigError(f"data.root={d.root}: none of {len(files)} sampled image(s) in {folder} can be decoded "
                      f"(e.g. {errors[0]}); allowed: readable image files")


def _validate_probe(pr: DictConfig, cfg: DictConfig) -> None:
    """The evaluation protocol (conf/probe/): keys every protocol reads, then the protocol's own."""
    from ldae.choices import CLEAN_INPUTS, PROBE_LR_SOURCES, PROBE_OPTIMIZERS, PROTOCOLS, check, check_pool

    name = pr.get("name")
    require(name in PROTOCOLS, f"unknown probe '{name}'; allowed: {', '.join(PROTOCOLS)}")
    check("probe.clean_input", pr.clean_input, CLEAN_INPUTS)
    check_pool(pr.pool)
    rules.check_probe_step(pr.t, pr.t_offset, cfg.schedule.num_steps)
    from ldae.models.registry import lookup

    depth = cfg.model.get("depth") or lookup(cfg.model.name).depth
    require(pr.block is None or (isinstance(pr.block, int) and 1 <= pr.block <= depth),
            f"probe.block={pr.block} is out of range; allowed: null (the split point) or 1..{depth} (the model depth)")
    if name == "knn":
        require(isinstance(pr.k, int) and pr.k >= 1, f"probe.k={pr.k} must be an integer >= 1")
        require(pr.temperature > 0, f"probe.temperature={pr.temperature} must be > 0")
        return
    require(isinstance(pr.epochs, int) and pr.epochs >= 1, f"probe.epochs={pr.epochs} must be an integer >= 1")
    require(isinstance(pr.batch_size, int) and pr.batch_size >= 1, f"probe.batch_size={pr.batch_size} must be an integer >= 1")
    require(pr.base_lr > 0, f"probe.base_lr={pr.base_lr} must be > 0")
    if name == "finetune":
        require(0 <= pr.layer_decay <= 1, f"probe.layer_decay={pr.layer_decay} must be in [0, 1]")
        require(0 <= pr.drop_path < 1, f"probe.drop_path={pr.drop_path} must be in [0, 1)")
        require(pr.batch_size >= 2, f"probe.batch_size={pr.batch_size} must be >= 2 (MixUp pairs samples)")
        return
    check("probe.optimizer", pr.optimizer, PROBE_OPTIMIZERS)
    require(pr.lr_source in PROBE_LR_SOURCES, f"unknown probe.lr_source '{pr.lr_source}'; allowed: {', '.join(PROBE_LR_SOURCES)}")
    require(not (pr.cache_features and pr.augment),
            "probe.cache_features=true needs probe.augment=false (cached features cannot be augmented)")


def _validate_speed(sp) -> None:
    from ldae.choices import COMPILE_BACKENDS, COMPILE_MODES

    if sp is None:
        return
    require(sp.compile_mode in COMPILE_MODES, f"unknown speed.compile_mode '{sp.compile_mode}'; allowed: {', '.join(COMPILE_MODES)}")
    require(sp.compile_backend in COMPILE_BACKENDS,
            f"unknown speed.compile_backend '{sp.compile_backend}'; allowed: {', '.join(COMPILE_BACKENDS)}")
    require(sp.fused_adamw in ("auto", True, False), f"speed.fused_adamw={sp.fused_adamw} must be auto, true or false")
    for key in ("compile", "tf32", "fused_attention", "ema_foreach", "activation_checkpointing", "channels_last"):
        require(isinstance(sp[key], bool), f"speed.{key}={sp[key]} must be true or false")


def _validate_tokenizer(tok: DictConfig, image_size: int) -> None:
    """Checks of the gradient-trained tokenizers: choices, local weight paths, the conv VAE's geometry."""
    from ldae.choices import LATENT_NORMS, PCA_SCALINGS, POSTERIORS, RECON_LOSSES, check

    if tok.name == "patch_pca":
        check("tokenizer.scaling", tok.scaling, PCA_SCALINGS)
    if tok.name not in ("vqgan", "patch_ae", "patch_vae"):
        return
    check("tokenizer.normalize", tok.normalize, LATENT_NORMS)
    check("tokenizer.posterior", tok.posterior, POSTERIORS)
    check("tokenizer.recon_loss", tok.recon_loss, RECON_LOSSES)
    steps = tok.train_steps
    require(isinstance(steps, int) and steps >= 0, f"tokenizer.train_steps={steps} must be an integer >= 0")
    if tok.name != "vqgan":
        return
    latent = plan.latent_geometry(tok, image_size)  # checks dit_patch against patch_size
    pre = tok.pretrained_path
    if pre:
        require(os.path.isfile(os.path.join(pre, "config.json")),
                f"tokenizer.pretrained_path={pre} holds no config.json; expected an AutoencoderKL.save_pretrained "
                f"folder (e.g. a local copy of stabilityai/sd-vae-ft-ema); nothing is downloaded")
        import json

        got = json.loads(Path(pre, "config.json").read_text())
        want_c, want_stride = latent.channels, latent.stride
        got_c, got_stride = got.get("latent_channels"), 2 ** (len(got.get("block_out_channels", [0])) - 1)
        require(got_c == want_c and got_stride == want_stride,
                f"tokenizer.pretrained_path={pre} has {got_c} latent channels at stride {got_stride}; this config "
                f"needs {want_c} at stride {want_stride} (latent_dim={tok.latent_dim}, patch_size={tok.patch_size}, "
                f"dit_patch={latent.patch})")
        return  # public weights are used as they are: no training, no training losses
    per = tok.perceptual
    if per.weight > 0 and not per.random_backbone:
        from ldae.weights import lpips_linear_path

        require(bool(per.backbone_path),
                f"tokenizer.perceptual.weight={per.weight} needs tokenizer.perceptual.backbone_path (a local "
                f"torchvision vgg16 state dict; linear_path defaults to LPIPS's heads in torchmetrics' wheel; nothing "
                f"is downloaded); allowed: set it, set tokenizer.perceptual.weight=0, set "
                f"tokenizer.perceptual.random_backbone=true, or load public weights with tokenizer.pretrained_path")
        require(os.path.isfile(per.backbone_path), f"tokenizer.perceptual.backbone_path={per.backbone_path} does not exist")
        lin = lpips_linear_path(per.linear_path)
        require(lin is not None, "tokenizer.perceptual.linear_path=null and torchmetrics ships no "
                                 "lpips_models/vgg.pth: set tokenizer.perceptual.linear_path to the LPIPS heads file")
        require(os.path.isfile(lin), f"tokenizer.perceptual.linear_path={per.linear_path} does not exist")
