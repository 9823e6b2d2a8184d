"""scale=mid: one GPU-day on an ImageNet-100-style imagefolder at 128 px with a B-size model."""

from helpers import write_image_folder

from ldae.config import validate
from ldae.models.registry import lookup
from ldae.plan import resolve_latent_dim


def _fake_imagefolder(root):
    from PIL import Image

    classes = [f"n{k:03d}" for k in range(100)]  # ImageNet-100's class count: validate compares it
    return write_image_folder(root, classes, 1, lambda split, k, i: Image.new("RGB", (160, 140), (10, 20, 30)),
                              suffix=".JPEG")


def test_mid_scale_composes_and_validates(compose, tmp_path):
    cfg = compose("experiment=ldae", "scale=mid", f"data.root={_fake_imagefolder(tmp_path)}")
    validate(cfg)
    assert cfg.scale_name == "mid" and cfg.data.name == "imagefolder" and cfg.data.num_classes == 100
    assert cfg.data.image_size == 128 and (cfg.data.image_size // cfg.tokenizer.patch_size) ** 2 == 256
    spec = lookup(cfg.model.name)
    assert spec.hidden_size == 768 and spec.encoder_depth == 12  # the paper's ViT-B encoder
    assert resolve_latent_dim(cfg.tokenizer) == 32 * 3 * 8 * 8 // 768  # the paper's d in proportion
    assert cfg.trainer.precision == "bf16-mixed" and cfg.speed.compile
    assert cfg.data.batch_size % cfg.data.device_batch_size == 0
