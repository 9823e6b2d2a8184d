"""Plain helpers shared by the test files of every folder (fixtures stay in the conftest.py files): CLI
subprocesses, tiny image folders, synthetic images, a run's metrics.csv, wandb's offline-run reader, the DiT
state-dict layout, the plug-in package's user config. Imported as `helpers` (pyproject's pytest `pythonpath`)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Lean smoke runs: one pretraining epoch (4 steps of the global batch 64), a 1-epoch probe, no baselines.
LEAN = ["scale=smoke", "trainer.max_epochs=1", "probe.epochs=1", "baselines=false", "resume=never",
        "trainer.accelerator=cpu"]
# The keys every run's results.json holds, in process or through the CLI.
RESULT_KEYS = ("experiment", "scale", "seed", "probe_top1", "pretrain_loss", "wall_s")
# A package of users' own parts outside ldae/ (tokenizers, a dataset, a schedule, a backbone).
PLUGINS = ROOT / "tests" / "plugins"


def run_cli(prog: str, *args: str, timeout: float = 120, cwd=None, env: dict | None = None):
    """Run `ldae-train` / `ldae-probe` as users do (the console script, or `python -m` without one)."""
    exe = Path(sys.executable).with_name(prog)
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "ldae." + prog.split("-", 1)[1]]
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"} if env is None else env
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


def subprocess_env(tmp_path: Path) -> dict:
    """The environment of a `python -m ldae.train` child: this checkout first on the path, one thread, its own
    tokenizer cache, wandb offline."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1",
            "LDAE_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "offline"}


def plugin_user_conf(tmp_path: Path) -> Path:
    """A user's config folder selecting tests/plugins/mypkg's tokenizers and dataset by `_target_`."""
    conf = tmp_path / "my_conf"
    (conf / "tokenizer").mkdir(parents=True)
    (conf / "data").mkdir()
    (conf / "tokenizer" / "randproj.yaml").write_text(
        "defaults: [plugin, _self_]\n_target_: mypkg.tokenizers.RandomPatchProjection\nname: randproj\ngain: 1.0\n")
    (conf / "tokenizer" / "nodecoder.yaml").write_text(
        "defaults: [plugin, _self_]\n_target_: mypkg.tokenizers.NoDecoder\nname: nodecoder\n")
    (conf / "data" / "stripes.yaml").write_text(
        "defaults: [plugin, _self_]\n_target_: mypkg.data.Stripes\nname: stripes\nnum_classes: 2\nn: 96\n")
    return conf


def smooth_images(n: int = 64, size: int = 16, seed: int = 0):
    """(n, 3, size, size) in [-1, 1]: low-res noise upsampled, so PCA has structure."""
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size // 4, size // 4, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)


def write_image_folder(root: Path, classes, per_class, draw, suffix: str = ".png",
                       splits=("train", "val")) -> Path:
    """root/<split>/<class>/<i><suffix> with draw(split, k, i) -> a PIL image, called in split, class, index
    order; per_class is a count or {split: count}."""
    for split in splits:
        n = per_class[split] if isinstance(per_class, dict) else per_class
        for k, c in enumerate(classes):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                draw(split, k, i).save(root / split / c / f"{i}{suffix}")
    return root


def grey_folder(root: Path, n: int = 24, size: int = 24) -> Path:
    """A labelled imagefolder of grey 24 px PNGs, two classes (dark / bright squares), other than shapes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)

    def draw(split, k, i):
        a = rng.integers(0, 60, (size, size)).astype(np.uint8) + (150 if k else 0)
        return Image.fromarray(a, mode="L")

    return write_image_folder(root, ("dark", "bright"), n, draw)


def inspect_command(run_dir: Path) -> list[str]:
    """`wandb leet inspect RUN --json`, wandb's reader of the .wandb transaction log: the wandb-core binary
    it runs, called directly as the CLI does (20 ms instead of 2 s of Python imports), else the CLI itself."""
    try:
        from wandb.util import get_core_path

        run_file = next(run_dir.glob("*.wandb"))
        return [get_core_path(), "leet", "inspect", "--no-observability", "--json", "--run-file", str(run_file),
                str(run_dir.parent)]
    except Exception:  # noqa: BLE001
        return [str(Path(sys.executable).with_name("wandb")), "leet", "inspect", str(run_dir), "--json"]


def read_offline_run(run_dir: Path) -> dict:
    """wandb's reader of an offline run's transaction log -> {group, name, job_type, tags, config, summary}."""
    proc = subprocess.run(inspect_command(run_dir), capture_output=True, text=True, timeout=60,
                          env={**os.environ, "WANDB_SILENT": "true"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = {"config": {}, "summary": {}}
    for line in proc.stdout.splitlines():
        rec = json.loads(line)
        if rec["type"] == "run":
            run = rec["run"]
            info.update(group=run.get("run_group"), name=run.get("display_name"), job_type=run.get("job_type"),
                        tags=run.get("tags", []))
            info["config"].update(run.get("config", {}).get("update", {}))
        elif rec["type"] == "config":
            info["config"].update(rec["config"].get("update", {}))
        elif rec["type"] == "summary":
            info["summary"].update(rec["summary"].get("update", {}))
    return info


def csv_rows(run_dir: Path, stage: str = "pretrain") -> list[dict]:
    """The rows of a stage's metrics.csv, each without its empty cells."""
    import csv

    with open(run_dir / "csv" / stage / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(f)]


def logged_steps(rows, key):
    return [int(r["step"]) for r in rows if key in r]


def logged_values(rows, key):
    return [float(r[key]) for r in rows if key in r]


def expected_shapes(hidden, depth, in_ch, out_ch, patch, grid, num_classes, null_row=True, mlp_ratio=4):
    """{name: shape} of an official DiT checkpoint's state dict."""
    h, m = hidden, int(hidden * mlp_ratio)
    shapes = {
        "pos_embed": (1, grid * grid, h),
        "x_embedder.proj.weight": (h, in_ch, patch, patch), "x_embedder.proj.bias": (h,),
        "t_embedder.mlp.0.weight": (h, 256), "t_embedder.mlp.0.bias": (h,),
        "t_embedder.mlp.2.weight": (h, h), "t_embedder.mlp.2.bias": (h,),
        "y_embedder.embedding_table.weight": (num_classes + int(null_row), h),
        "final_layer.linear.weight": (patch * patch * out_ch, h), "final_layer.linear.bias": (patch * patch * out_ch,),
        "final_layer.adaLN_modulation.1.weight": (2 * h, h), "final_layer.adaLN_modulation.1.bias": (2 * h,),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        shapes.update({
            b + "attn.qkv.weight": (3 * h, h), b + "attn.qkv.bias": (3 * h,),
            b + "attn.proj.weight": (h, h), b + "attn.proj.bias": (h,),
            b + "mlp.fc1.weight": (m, h), b + "mlp.fc1.bias": (m,),
            b + "mlp.fc2.weight": (h, m), b + "mlp.fc2.bias": (h,),
            b + "adaLN_modulation.1.weight": (6 * h, h), b + "adaLN_modulation.1.bias": (6 * h,),
        })
    return shapes


def png_pixels(path: Path):
    """A PNG's (width, height) and its pixels as a float array (H, W[, C])."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        return im.size, np.asarray(im, dtype=np.float32)


def assert_top1_of(top1: float, n: int) -> None:
    """top1 is a percentage of n evaluated images: 100 k / n for a whole k in [0, n]. At scale=smoke the probes
    sit at chance, so this, not a margin over chance, is the bound that holds there."""
    k = top1 * n / 100
    assert 0 <= round(k) <= n and abs(k - round(k)) < 1e-6, f"top1={top1} is no whole count of {n} images"
