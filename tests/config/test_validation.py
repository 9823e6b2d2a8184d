"""Bad configs and bad data: one clear line, a non-zero exit, no traceback, before any work starts."""

from pathlib import Path

import pytest
import torch
from helpers import write_image_folder

from ldae.config import ConfigError


# (command line, the start of the first stderr line after "ldae-train: error: ")
BAD_CONFIGS = [
    (["schedule=no_such_schedule"], "unknown schedule 'no_such_schedule'; allowed: cosine, ddpm_linear"),
    (["tokenizer.latent_dim=0"], "tokenizer.latent_dim=0 is out of range; allowed: 1..768"),
    (["tokenizer.latent_units=absolute", "tokenizer.latent_dim=49"],
     "tokenizer.latent_dim=49 is out of range; allowed: 1..48 (the patch dimension D = 3*4*4)"),
    (["data.batch_size=0"], "data.batch_size=0 must be an integer >= 1"),
    (["optim.base_lr=0"], "optim.base_lr=0 must be > 0"),
    (["optim.base_lr=-1e-4"], "optim.base_lr=-0.0001 must be > 0"),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0 must be an integer >= 1"),
    (["probe.epochs=0"], "probe.epochs=0 must be an integer >= 1"),
    (["data.image_size=30", "tokenizer=vqgan"], "data.image_size=30 is not divisible by tokenizer.patch_size=4"),
    (["data=imagefolder", "data.root=/nonexistent"], "data.root=/nonexistent has no 'train' folder"),
    (["tokenizer=vqgan", "tokenizer.pretrained_path=/nonexistent/sd-vae"],
     "tokenizer.pretrained_path=/nonexistent/sd-vae holds no config.json"),
    (["tokenizer=vqgan", "tokenizer.perceptual.random_backbone=false"],
     "tokenizer.perceptual.weight=1.0 needs tokenizer.perceptual.backbone_path (a local torchvision vgg16"),
    (["model.class_cond=true", "data.labels=false"], "model.class_cond=true needs labels, but data.labels=false"),
    (["data.batch_size=64", "trainer.accelerator=cpu", "trainer.devices=3"],
     "data.batch_size=64 is not divisible by the world size 3"),
    (["checkpoint.every_n_steps=0"], "checkpoint.every_n_steps=0 must be null or an integer >= 1"),
    (["optim.on_nonfinite=explode"], "unknown optim.on_nonfinite 'explode'; allowed: stop, skip"),
    (["resume=maybe"], "unknown resume 'maybe'; allowed: auto, never"),
    (["optim.gradient_clip=-1"], "optim.gradient_clip=-1 must be null (no clipping) or > 0"),
    (["optim.base_lrr=1"], "unknown config key 'optim.base_lrr'"),
    (["target=nope"], "unknown target 'nope'; allowed:"),
    (["tokenizer=vqgan", "model.name=micro-1-1/4"], "model patch 4 (model.name=micro-1-1/4) does not match tokenizer.dit_patch=2"),
]


# Keys that were never checked (issue 14, item 10): each refused before any work.
BAD_CONFIGS += [
    (["model.encoder_depth=5"], "model.encoder_depth=5 is out of range; allowed: null (the registry's split) or 1..2"),
    (["model.encoder_depth=0"], "model.encoder_depth=0 is out of range"),
    (["model.depth=0"], "model.depth=0 must be null (the registry's) or an integer >= 1"),
    (["seed=abc"], "seed=abc must be an integer >= 0"),
    (["seed=-1"], "seed=-1 must be an integer >= 0"),
    (["data.num_workers=-1"], "data.num_workers=-1 must be an integer >= 0"),
    (["data.num_workers=abc"], "data.num_workers=abc must be an integer >= 0"),
    (["trainer.devices=abc"], "trainer.devices=abc is not a device count; allowed: an integer >= 1, -1 or auto"),
    (["trainer.devices=0"], "trainer.devices=0 is not a device count"),
    (["trainer.devices=[a]"], "trainer.devices=['a'] is not a device count"),
    (["trainer.num_nodes=0"], "trainer.num_nodes=0 must be an integer >= 1"),
    (["trainer.precision=bogus"], "unknown trainer.precision 'bogus'; allowed: transformer-engine"),
    (["data.hflip=maybe"], "data.hflip=maybe must be true or false"),
    (["data.labels=1"], "data.labels=1 must be true or false"),
    (["model.class_cond=yes"], "model.class_cond=yes must be true or false"),
    (["baselines=maybe"], "baselines=maybe must be true or false"),
    (["data.num_classes=1"], "data.num_classes=1 must be an integer >= 2"),
    (["data.num_classes=13"], "data.num_classes=13 is out of range for data=shapes; allowed: 2..12"),
    (["data.device_batch_size=0"], "data.device_batch_size=0 must be null or an integer >= 1"),
]


def _one_line_exit_2(capsys, call, prog: str) -> str:
    """Run `call` as the app's entry does (a ConfigError becomes `fail`); assert exit 2, one stderr line, no
    traceback; return the message after `PROG: error: `."""
    from ldae.cli import fail

    with pytest.raises(SystemExit) as e:
        try:
            call()
        except ConfigError as err:
            fail(prog, str(err))
    out, err = capsys.readouterr()
    assert e.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out + err, err
    assert lines[0].startswith(f"{prog}: error: "), err
    return lines[0][len(f"{prog}: error: "):]


@pytest.mark.parametrize("args, message", BAD_CONFIGS, ids=[" ".join(a) for a, _ in BAD_CONFIGS])
def test_bad_config_is_one_line_and_exit_2(capsys, args, message):
    """In-process through the CLI's own precheck (what `ldae-train` runs before Hydra starts)."""
    from ldae.cli import precheck_cli

    got = _one_line_exit_2(capsys, lambda: precheck_cli("ldae-train", ["experiment=ldae", "scale=smoke", *args]),
                           "ldae-train")
    assert got.startswith(message), got


def test_image_objectives_need_a_decoder(compose, monkeypatch):
    from ldae import choices
    from ldae.config import validate

    validate(compose("tokenizer=patch_pca"))
    monkeypatch.setattr(choices, "NO_DECODER", ("patch_pca",))  # as an encoder-only tokenizer would declare
    with pytest.raises(ConfigError, match=r"^tokenizer=patch_pca has no decoder, but target.input=image"):
        validate(compose("tokenizer=patch_pca"))
    validate(compose("tokenizer=patch_pca", "target=eps"))  # a latent objective needs no decoder


def _folder(root: Path, classes=("a", "b"), per_class=3) -> Path:
    """Random 24 x 20 RGB PNGs, the same in both splits."""
    from PIL import Image

    def draw(split, k, i):
        g = torch.Generator().manual_seed(10 * k + i)
        return Image.fromarray(torch.randint(0, 255, (20, 24, 3), generator=g, dtype=torch.uint8).numpy())

    return write_image_folder(root, classes, per_class, draw)


def test_corrupt_images_are_skipped_and_counted(tmp_path, caplog):
    from ldae.data.datasets import ImageFolderDataset, warn_bad_images

    root = _folder(tmp_path)
    (root / "train" / "a" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    (root / "train" / "b" / "9.jpg").write_bytes(b"")  # empty file
    ds = ImageFolderDataset(str(root), "train", 16, "center", False, None, labels=True, min_scale=0.2)
    assert len(ds) == 7
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=1)
    xs, ys, idx = zip(*loader)
    x = torch.cat(xs)
    assert x.shape == (7, 3, 16, 16) and torch.isfinite(x).all() and torch.cat(idx).tolist() == list(range(7))
    with caplog.at_level("WARNING", logger="ldae"):
        assert warn_bad_images(ds, "epoch 0 (train)") == 2  # counted across the worker process
    assert "skipped 2 unreadable image file(s)" in caplog.text
    assert warn_bad_images(ds, "epoch 1 (train)") == 0  # the count restarts every epoch


def test_empty_class_folder_and_empty_split_are_clear_errors(tmp_path):
    from ldae.data.datasets import DataError, ImageFolderDataset

    root = _folder(tmp_path)
    (root / "train" / "empty_class").mkdir()
    with pytest.raises(DataError, match=r"class folder .*empty_class holds no images"):
        ImageFolderDataset(str(root), "train", 16, "center", False, None, labels=True, min_scale=0.2)
    (root / "nothing").mkdir()
    with pytest.raises(DataError, match=r"no class folders in .*nothing"):
        ImageFolderDataset(str(root), "nothing", 16, "center", False, None, labels=True, min_scale=0.2)
    with pytest.raises(DataError, match=r"no images in .*nothing \(the nothing split is empty\)"):
        ImageFolderDataset(str(root), "nothing", 16, "center", False, None, labels=False, min_scale=0.2)
    flat = ImageFolderDataset(str(root), "val", 16, "center", False, None, labels=False, min_scale=0.2)
    assert len(flat) == 6 and flat[0][1] == -1


# ---------------------------------------------------------------------------------------------- image folders

def test_class_folders_must_match_num_classes_before_any_work(capsys, tmp_path):
    from ldae.cli import precheck_cli

    root = _folder(tmp_path / "imgs")  # 2 classes; data=imagefolder defaults to num_classes=1000
    base = ["experiment=ldae", "scale=smoke", "data=imagefolder", f"data.root={root}", "data.num_workers=0"]
    got = _one_line_exit_2(capsys, lambda: precheck_cli("ldae-train", base), "ldae-train")
    assert got == (f"data.num_classes=1000 but {root / 'train'} holds 2 class folder(s); allowed: "
                   f"data.num_classes=2"), got
    precheck_cli("ldae-train", [*base, "data.num_classes=2"])  # the matching count passes
    (root / "val" / "c").mkdir()  # val has a class train lacks
    got = _one_line_exit_2(capsys, lambda: precheck_cli("ldae-train", [*base, "data.num_classes=2"]), "ldae-train")
    assert got.startswith(f"data.num_classes=2 but {root / 'val'} holds 3 class folder(s)"), got


def test_an_image_folder_of_undecodable_files_is_one_line_naming_it(capsys, tmp_path):
    from ldae.cli import precheck_cli

    root = _folder(tmp_path / "imgs")
    for f in (root / "train").rglob("*.png"):
        f.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    args = ["experiment=ldae", "scale=smoke", "data=imagefolder", f"data.root={root}", "data.num_classes=2",
            "data.num_workers=2"]
    got = _one_line_exit_2(capsys, lambda: precheck_cli("ldae-train", args), "ldae-train")
    assert got.startswith(f"data.root={root}: none of 6 sampled image(s) in {root / 'train'} can be decoded"), got


def test_a_worker_that_finds_no_readable_image_is_one_line_naming_the_folder(capsys, tmp_path):
    """Past the precheck (e.g. a subset of bad files): the worker's DataError comes back wrapped in its traceback;
    the app's one line is the original message, which names the folder."""
    from ldae.cli import fail
    from ldae.data.datasets import DataError, ImageFolderDataset

    root = _folder(tmp_path / "imgs")
    for f in (root / "train").rglob("*.png"):
        f.write_bytes(b"")
    ds = ImageFolderDataset(str(root), "train", 16, "center", False, None, labels=True, min_scale=0.2)
    with pytest.raises(DataError) as e:
        next(iter(torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1)))
    assert "Traceback" in str(e.value)  # what the user saw before
    with pytest.raises(SystemExit) as ex:
        fail("ldae-train", str(e.value))
    err = capsys.readouterr().err
    assert ex.value.code == 2 and "Traceback" not in err
    assert err.strip().splitlines() == [f"ldae-train: error: no readable image among the 6 files of {root / 'train'}; "
                                        f"allowed: readable image files"], err


def test_precisions_are_lightnings():
    import typing

    from lightning_fabric.connector import _PRECISION_INPUT

    from ldae.choices import PRECISIONS

    def leaves(t):
        args = typing.get_args(t)
        return [x for a in args for x in leaves(a)] if args and typing.get_origin(t) is not None else [t]

    assert set(PRECISIONS) == set(leaves(_PRECISION_INPUT))


def test_shapes_class_count_is_the_shapes_module():
    from ldae.choices import SHAPES_MAX_CLASSES
    from ldae.data.shapes import SHAPE_CLASSES

    assert SHAPES_MAX_CLASSES == len(SHAPE_CLASSES)


# ---------------------------------------------------------------------------------------------- trajectory.py

TRAJECTORY_BAD = [
    (["seeds=abc"], "seeds=abc must be an integer >= 1"),
    (["seeds=0"], "seeds=0 must be an integer >= 1"),
    (["steps=abc"], "steps=abc is not a list of row numbers; allowed: null (all rows) or a list such as"),
    (["steps=[a,b]"], "steps=['a', 'b'] is not a list of row numbers"),
    (["steps=1.5"], "steps=1.5 is not a list of row numbers"),
    (["steps=[13]"], "steps=[13]: unknown rows [13]; allowed: 0..12"),
    (["baselines_once=maybe"], "baselines_once=maybe must be true or false"),
    (["seed=abc"], "seed=abc must be an integer >= 0"),
    (["optim.base_lrr=1"], "unknown config key 'optim.base_lrr'"),
    (["schedule=nope"], "unknown schedule 'nope'; allowed:"),
]


@pytest.mark.parametrize("args, message", TRAJECTORY_BAD, ids=[" ".join(a) for a, _ in TRAJECTORY_BAD])
def test_trajectory_bad_input_is_one_line(capsys, args, message):
    from ldae.cli import precheck_cli
    from ldae.report.trajectory import check_own_keys

    got = _one_line_exit_2(capsys, lambda: precheck_cli("trajectory", ["scale=smoke", *args], "trajectory",
                                                        check=check_own_keys), "trajectory")
    assert got.startswith(message), got


@pytest.mark.parametrize("args, message", [
    (["optim.base_lr=-1"], "row 11_image_output (seed 0): optim.base_lr=-1 must be > 0"),
    (["data.hflip=maybe"], "row 11_image_output (seed 0): data.hflip=maybe must be true or false"),
    (["model.encoder_depth=9"], "row 11_image_output (seed 0): model.encoder_depth=9 is out of range"),
])
def test_trajectory_validates_every_row_before_the_first_runs(capsys, monkeypatch, tmp_path, args, message):
    """A bad train value: one line naming the row, and no row has started (before: one traceback per row)."""
    import ldae.train
    from ldae.cli import compose_config
    from ldae.report.trajectory import run_trajectory

    calls = []
    monkeypatch.setattr(ldae.train, "run", lambda cfg, out: calls.append(out))
    cfg = compose_config(["scale=smoke", "steps=[11,12]", *args], "trajectory")
    got = _one_line_exit_2(capsys, lambda: run_trajectory(cfg, tmp_path / "t", ["steps=[11,12]", *args]),
                           "trajectory")
    assert got.startswith(message), got
    assert calls == [] and not (tmp_path / "t").exists()


# ---------------------------------------------------------------------------------------------- ldae-probe

def _probe_file(kind: str, path: Path) -> Path:
    if kind == "truncated":
        torch.save({"state_dict": {"w": torch.zeros(1000)}, "hyper_parameters": {"config": {}}}, path)
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "random":
        path.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    elif kind == "text":
        path.write_text("not a checkpoint\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "list":
        torch.save([1, 2, 3], path)
    elif kind == "no_config":
        torch.save({"state_dict": {}}, path)
    return path


PROBE_BAD = [
    ("missing", "does not exist; give a checkpoint written by ldae-train"),
    ("truncated", "cannot be read as a checkpoint"),
    ("random", "cannot be read as a checkpoint"),
    ("text", "cannot be read as a checkpoint"),
    ("empty", "cannot be read as a checkpoint"),
    ("list", "holds a list, not a checkpoint"),
    ("no_config", "holds no ldae config"),
]


@pytest.mark.parametrize("kind, message", PROBE_BAD, ids=[k for k, _ in PROBE_BAD])
def test_probe_of_an_unreadable_file_is_one_line(capsys, tmp_path, kind, message):
    from ldae.checkpoints import load_checkpoint_config

    path = _probe_file(kind, tmp_path / "x.ckpt")
    got = _one_line_exit_2(capsys, lambda: load_checkpoint_config(str(path)), "ldae-probe")
    assert got.startswith(f"ckpt_path={path} {message}"), got


def test_probe_without_a_checkpoint_is_one_line(capsys):
    from ldae.cli import precheck_cli

    got = _one_line_exit_2(capsys, lambda: precheck_cli("ldae-probe", [], "eval"), "ldae-probe")
    assert got.startswith("missing required value 'ckpt_path'"), got


# ---------------------------------------------------------------------------------------------- report.py

def _results(root: Path, name: str, res) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "results.json").write_text(__import__("json").dumps(res))


GOOD = {"experiment": "ldae", "seed": 0, "probe_top1": 30.0, "pretrain_loss": 0.1, "wall_s": 1.0}


@pytest.mark.parametrize("setup, message", [
    ("missing", "folder {root}/nope does not exist or is not a folder; allowed: run folders"),
    ("file", "folder {root}/f.txt does not exist or is not a folder"),
    ("empty", "no finished runs (results with probe_top1) in {root}"),
])
def test_report_bad_folder_is_one_line(capsys, tmp_path, setup, message):
    from ldae.report.runs import compare

    arg = {"missing": tmp_path / "nope", "file": tmp_path / "f.txt", "empty": tmp_path}[setup]
    if setup == "file":
        arg.write_text("x")
    got = _one_line_exit_2(capsys, lambda: compare([str(arg)]), "report")
    assert got.startswith(message.format(root=tmp_path)), got


@pytest.mark.parametrize("bad, why", [
    (None, "a JSON null, not a results object"),
    ([1, 2], "a JSON list, not a results object"),
    ({**GOOD, "probe_top1": "30.0"}, "probe_top1='30.0' is not a finite number"),
    ({**GOOD, "probe_top1": float("nan")}, "probe_top1=nan is not a finite number"),
])
def test_report_skips_a_malformed_results_json_with_one_line(capsys, tmp_path, bad, why):
    """Beside a usable run: skipped with one line, the table has the usable run only; alone: exit 2."""
    from ldae.cli import fail
    from ldae.report.runs import compare

    _results(tmp_path / "runs", "a_bad", bad)
    with pytest.raises(SystemExit) as e:
        try:
            compare([str(tmp_path / "runs")], out=tmp_path / "o1")
        except ConfigError as err:  # as experiments/report.py does
            fail("report", str(err))
    err = capsys.readouterr().err.strip().splitlines()
    skip = f"report: skipping {tmp_path / 'runs' / 'a_bad' / 'results.json'} ({why})"
    assert e.value.code == 2 and err[0] == skip and len(err) == 2, err
    assert err[1].startswith("report: error: no finished runs") and not (tmp_path / "o1").exists()
    _results(tmp_path / "runs", "b_good", GOOD)
    paths = compare([str(tmp_path / "runs")], out=tmp_path / "o2")
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [skip], err
    lines = [ln for ln in paths["md"].read_text().splitlines() if ln.startswith("| ldae")]
    assert len(lines) == 1 and "30.00" in lines[0] and "'30.0'" not in paths["md"].read_text()
