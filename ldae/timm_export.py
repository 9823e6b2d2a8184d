"""A pretraining checkpoint's encoder as a plain timm model: folded at t (ldae.models.timm_vit), its input
folded in too, written as timm weights or a timm folder with a model card. The library of `ldae-export`.

Input (`input=`): `image` (default) folds the tokenizer into the patch embedding as well, so the exported
ViT reads the plain image in [-1, 1]: for a patch tokenizer (PCA, patch AE, patch VAE) the clean network
input of one token's pixels -- its latent, or its projection back to pixels -- is an affine map of them,
and so is the patch embedding after it; the composition is one conv with the token's pixel side as its
kernel (found exactly by probing the map with basis images, then checked on random images). A tokenizer
that is not such a map (the conv VAE) is refused in one line: `input=network` exports the ViT on the
encoder's own network input (the latent map, or the projected image), as before.

Output (`out=`): a folder that plain timm loads, `timm.create_model("local-dir:OUT", pretrained=True)`
(timm's save_for_hf layout: model.safetensors, config.json with the pretrained_cfg, plus a README.md model
card); or, when OUT ends in .pth, the state dict (loads with `weights_only=True`) and OUT.json (the timm
constructor arguments and the t it was folded at).
"""

from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path

import timm
import torch
from omegaconf import OmegaConf
from timm.models import save_for_hf

from ldae.checkpoints import load_checkpoint_config
from ldae.lit.features import clean_network_input
from ldae.lit.pretrain import PretrainModule
from ldae.models.timm_vit import fold_encoder


EXPORT_INPUTS = ("image", "network")


@torch.no_grad()
def fold_input(module, clean_input: str = "projected") -> tuple[torch.Tensor, torch.Tensor]:
    """(weight (E, 3, S, S), bias (E,)): the patch embedding of the clean network input as one conv on the
    image, S = the pixels of one token. Raises ValueError when the tokenizer is not a per-token affine map."""
    backbone, tok, obj = module.encoder(True), module.tokenizer, module.objective
    size = int(module.cfg.data.image_size)
    side = size // backbone.grid
    tok64, proj64 = copy.deepcopy(tok).double().eval(), copy.deepcopy(backbone.x_embedder.proj).double()

    def embed(images):  # (B, 3, H, W) -> (B, E, H/S, W/S)
        return proj64(clean_network_input(images, tok64, obj, clean_input))

    n_in = 3 * side * side
    basis = torch.cat([torch.zeros(1, n_in), torch.eye(n_in)]).double().view(-1, 3, side, side)  # (1 + n, 3, S, S)
    out = torch.cat([embed(b) for b in basis.split(256)]).flatten(1)  # (1 + n, E)
    bias = out[0]
    weight = (out[1:] - bias).T.reshape(-1, 3, side, side)  # (E, 3, S, S)
    x = torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    want = embed(x)
    got = torch.nn.functional.conv2d(x, weight, bias, stride=side)
    if got.shape != want.shape or (got - want).abs().max() > 1e-6 * max(1.0, float(want.abs().max())):
        raise ValueError(f"input=image needs a tokenizer that is a per-patch linear map (patch_pca, patch_ae, "
                         f"patch_vae, none), not tokenizer '{module.cfg.tokenizer.name}'; allowed: input=network "
                         f"(the ViT on the encoder's own input, the latent map)")
    return weight.float(), bias.float()


def _load_module(ckpt_path: str):
    """(the checkpoint's PretrainModule in eval mode, its stored config as written)."""
    ckpt, config = load_checkpoint_config(ckpt_path)
    target = (config.get("model") or {}).get("_target_")
    if target is not None:  # the fold reads DiT's own blocks
        raise ValueError(f"{ckpt_path} holds a backbone of your own (model._target_={target}); the timm export folds "
                         f"ldae's DiT only")
    module = PretrainModule(config)
    module.load_state_dict(ckpt["state_dict"])
    return module.eval(), config


def export_checkpoint(ckpt_path: str, t: int, out: str | Path, block: int | None = None,
                      use_ema: bool = True, input: str = "image", command: str | None = None) -> dict:
    """Fold the encoder of a pretraining checkpoint at t and write OUT: a timm folder, or OUT.pth + OUT.pth.json.
    Returns the record (timm kwargs, t, input, ...)."""
    if input not in EXPORT_INPUTS:
        raise ValueError(f"unknown input '{input}'; allowed: {', '.join(EXPORT_INPUTS)}")
    module, config = _load_module(ckpt_path)
    backbone = module.encoder(use_ema)
    sd, kwargs = fold_encoder(backbone, t, block)
    clean_input = config["probe"]["clean_input"]
    if input == "image":
        w, b = fold_input(module, clean_input)
        sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"] = w, b
        kwargs = {**kwargs, "img_size": int(config["data"]["image_size"]), "patch_size": w.shape[-1], "in_chans": 3}
    record = {"timm_kwargs": kwargs, "t": t, "ckpt_path": str(ckpt_path), "use_ema": use_ema, "input": input,
              "network_input": module.objective.input, "clean_input": clean_input,
              "experiment": config.get("name"), "block": block}
    out = Path(out)
    if out.suffix == ".pth":
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(sd, out)
        out.with_name(out.name + ".json").write_text(json.dumps(record, indent=2) + "\n")
        return record
    write_timm_folder(sd, kwargs, out, record, config, image_input=input == "image" or record["network_input"] == "image",
                      command=command)
    return record


def write_timm_folder(sd: dict, kwargs: dict, out: Path, record: dict, config: dict, image_input: bool,
                      command: str | None = None) -> None:
    """timm's own save_for_hf layout (model.safetensors + config.json), then our model card (README.md)."""
    # Any registered ViT name: config.json's model_args rebuild our exact architecture on load.
    vit = timm.create_model("vit_base_patch16_224", pretrained=False, **kwargs)
    vit.load_state_dict(sd, strict=True)
    # Images in [-1, 1] are timm's [0, 1] normalised by mean = std = 0.5; a latent map is read as it is.
    norm = (0.5, 0.5, 0.5) if image_input else (0.0,) * kwargs["in_chans"]
    std = (0.5, 0.5, 0.5) if image_input else (1.0,) * kwargs["in_chans"]
    crop = config["data"]["crop"]
    data_cfg = {"mean": norm, "std": std, "crop_pct": 1.0, "interpolation": "bicubic",
                "input_size": (kwargs["in_chans"], kwargs["img_size"], kwargs["img_size"])}
    tag = f"ldae-{record['experiment']}-t{record['t']}"
    save_for_hf(vit, str(out), safe_serialization=True, data_config=data_cfg,
                model_config={"pretrained_cfg": {"tag": tag, "license": "apache-2.0"}})
    (out / "ldae_export.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "README.md").write_text(model_card(record, config, image_input, command, crop))


def _run_results(ckpt_path: str) -> dict:
    """results.json of the run the checkpoint came from (RUN/checkpoints/last.ckpt -> RUN/results.json)."""
    path = Path(ckpt_path).resolve().parent.parent / "results.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _train_command(ckpt_path: str) -> str | None:
    overrides = Path(ckpt_path).resolve().parent.parent / ".hydra" / "overrides.yaml"
    try:
        return "ldae-train " + " ".join(shlex.quote(str(o)) for o in OmegaConf.load(overrides))
    except Exception:  # noqa: BLE001 - a run folder without Hydra's record: the card says so
        return None


def model_card(record: dict, config: dict, image_input: bool, command: str | None, crop: str) -> str:
    res = _run_results(record["ckpt_path"])
    kw = record["timm_kwargs"]
    probe = {k: res[k] for k in ("probe_top1", "baseline_pixels_top1", "baseline_random_top1") if k in res}
    probe_lines = "\n".join(f"| {k} | {v} |" for k, v in probe.items()) or "| (no results.json beside the checkpoint) | |"
    if record["input"] == "image":
        inp = ("the plain image: RGB in [-1, 1] (timm's [0, 1] input normalised by mean = std = 0.5), "
               f"{kw['img_size']} px; the tokenizer's per-patch projection is folded into the patch embedding")
    elif image_input:
        inp = f"the encoder's network input: the tokenizer's projection of the image, in [-1, 1], {kw['img_size']} px"
    else:
        inp = (f"the encoder's network input: the tokenizer's latent map ({kw['in_chans']} channels, "
               f"{kw['img_size']} x {kw['img_size']}), not an image: encode images with the run's tokenizer first")
    train = _train_command(record["ckpt_path"]) or "(the run folder holds no .hydra/overrides.yaml)"
    return f"""---
license: apache-2.0
library_name: timm
tags: [image-feature-extraction, timm, ldae, self-supervised]
---
# {record['experiment']} encoder at t = {record['t']} (ldae)

The encoder of a DiT pretrained with ldae, with its adaLN modulation folded at timestep t = {record['t']} into a plain
timm `VisionTransformer` (no class token, average pooling, no final norm, GELU tanh): `num_classes=0` gives the
{kw['embed_dim']}-d features the run's linear probe read.

```python
import timm
model = timm.create_model("local-dir:PATH", pretrained=True)  # PATH: this folder
features = model(images)  # (B, {kw['embed_dim']})
```

- **Paper**: Chen, Liu, Xie, He, *Deconstructing Denoising Diffusion Models for Self-Supervised Learning*,
  2024, arXiv:2401.14404.
- **Trajectory row / experiment**: `{record['experiment']}` (scale `{config.get('scale_name')}`, data
  `{config.get('data', {}).get('name')}`, tokenizer `{config.get('tokenizer', {}).get('name')}`, network input
  `{record['network_input']}`), depth {kw['depth']} of the encoder, EMA weights: {record['use_ema']}.
- **Input**: {inp}. The run's images were {crop}-cropped to {kw['img_size']} px.
- **t**: {record['t']} (the conditioning timestep; the probe's default t is 10).

| the run's probe (top-1, %) | |
|---|---|
{probe_lines}

Made by:

```bash
{train}
{command or 'ldae-export ckpt_path=' + record['ckpt_path'] + ' t=' + str(record['t'])}
```
"""
