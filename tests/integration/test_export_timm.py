"""ldae-export as a timm local-dir folder: plain timm (no ldae import) loads it and gives ldae's features."""

import json
import subprocess
import sys

import pytest
import torch

ROWS = {"12": "experiment=trajectory/12_predict_image", "07": "experiment=trajectory/07_patch_pca"}

# Run in a fresh interpreter: only timm and torch, never ldae. argv: (folder, input.pt, output.pt) triples.
PLAIN_TIMM = r"""
import sys, torch, timm
args = sys.argv[1:]
for folder, inp, out in zip(args[0::3], args[1::3], args[2::3]):
    model = timm.create_model("local-dir:" + folder, pretrained=True).eval()
    with torch.no_grad():
        torch.save(model(torch.load(inp, weights_only=True)), out)
assert not any(m == "ldae" or m.startswith("ldae.") for m in sys.modules), "ldae was imported"
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    # Not the shared smoke run: the model card names the trajectory row (12_predict_image, not ldae), and
    # row 07 reads a latent input.
    from ldae.cli import compose_config
    from ldae.train import run

    out = {}
    for row, exp in ROWS.items():
        d = tmp_path_factory.mktemp(f"row{row}")
        run(compose_config([exp, "scale=smoke", "baselines=false"]), d)
        out[row] = d
    return out


def _ldae_features(ckpt, x, t=10):
    from ldae.lit.pretrain import PretrainModule
    from ldae.lit.features import EncoderFeatures
    from ldae.checkpoints import load_checkpoint_config

    state, config = load_checkpoint_config(str(ckpt))
    module = PretrainModule(config)
    module.load_state_dict(state["state_dict"])
    ext = EncoderFeatures(module.encoder(True), module.tokenizer, module.objective, module.schedule, t=t).eval()
    with torch.no_grad():
        return ext(x)


@pytest.mark.slow
def test_plain_timm_loads_the_folder_and_gives_ldaes_features(runs, tmp_path):
    """Row 12 (PCA, image input) and row 07 (PCA latent input), both folded to read the plain image."""
    from ldae.export import cli

    triples, want = [], {}
    for row in ROWS:
        ckpt = runs[row] / "checkpoints" / "last.ckpt"
        folder = tmp_path / f"encoder{row}"
        cli([f"ckpt_path={ckpt}", "t=10", f"out={folder}"])
        assert {"model.safetensors", "config.json", "README.md"} <= {p.name for p in folder.iterdir()}
        cfg = json.loads((folder / "config.json").read_text())
        assert cfg["pretrained_cfg"]["mean"] == [0.5, 0.5, 0.5] and cfg["pretrained_cfg"]["input_size"] == [3, 16, 16]
        x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(int(row))) * 2 - 1  # images in [-1, 1]
        torch.save(x, tmp_path / f"x{row}.pt")
        triples += [str(folder), str(tmp_path / f"x{row}.pt"), str(tmp_path / f"f{row}.pt")]
        want[row] = _ldae_features(ckpt, x)

        card = (folder / "README.md").read_text()
        results = json.loads((runs[row] / "results.json").read_text())
        name = "12_predict_image" if row == "12" else "07_patch_pca"
        for needle in ("arXiv:2401.14404", f"`{name}`", "t = 10", str(results["probe_top1"]), "ldae-export ckpt_path="):
            assert needle in card, needle

    r = subprocess.run([sys.executable, "-c", PLAIN_TIMM, *triples], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    for row in ROWS:
        got = torch.load(tmp_path / f"f{row}.pt", weights_only=True)
        torch.testing.assert_close(got, want[row], atol=1e-5, rtol=1e-5)


def test_pth_option_and_the_conv_vae_refusal(runs, tmp_path, capsys):
    from ldae.export import cli
    from ldae.models.timm_vit import build_vit
    from ldae.timm_export import fold_input

    ckpt = runs["07"] / "checkpoints" / "last.ckpt"
    cli([f"ckpt_path={ckpt}", "t=10", f"out={tmp_path / 'enc.pth'}", "input=network"])  # the latent-input ViT
    rec = json.loads((tmp_path / "enc.pth.json").read_text())
    assert rec["input"] == "network" and rec["timm_kwargs"]["in_chans"] == 2  # smoke: d = 32 x 48 / 768
    vit = build_vit(rec["timm_kwargs"]).eval()
    vit.load_state_dict(torch.load(tmp_path / "enc.pth", weights_only=True), strict=True)

    class Squared(torch.nn.Module):  # a tokenizer whose latent is not affine in the pixels (as the conv VAE's)
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def encode(self, x):
            return self.inner.encode(x) ** 2

        def decode(self, z):
            return self.inner.decode(z)

    from ldae.timm_export import _load_module

    module, _ = _load_module(str(ckpt))
    fold_input(module)  # patch PCA: foldable
    module.tokenizer = Squared(module.tokenizer)
    with pytest.raises(ValueError, match="input=image needs a tokenizer that is a per-patch linear map"):
        fold_input(module)
    with pytest.raises(SystemExit) as e:
        cli([f"ckpt_path={ckpt}", "out=x", "input=pixels"])
    assert e.value.code == 2 and "unknown input 'pixels'; allowed: image, network" in capsys.readouterr().err
