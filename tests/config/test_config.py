import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError

from ldae.cli import check_group_overrides, group_options
from ldae.config import ConfigError, validate
from ldae.plan import resolve_latent_dim

SCALES = group_options("scale")
EXPERIMENTS = group_options("experiment")


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_scale_experiment_pair_composes(compose, scale, experiment):
    overrides = [f"experiment={experiment}", f"scale={scale}"]
    if scale in ("paper", "mid"):
        overrides.append("data=shapes")  # their imagefolder needs a root that tests do not have
        overrides.append("data.num_classes=10")  # ...and shapes draws at most 12 classes (mid sets 100)
        overrides.append("tokenizer_scale.random_backbone=true")  # trajectory rows 00/01: no LPIPS/SD-VAE weights here
    cfg = compose(*overrides)
    validate(cfg)
    assert cfg.scale_name == scale
    assert cfg.data.image_size % cfg.tokenizer.patch_size == 0


def test_paper_scale_is_the_paper_recipe(compose):
    cfg = compose("experiment=ldae", "scale=paper", "data.root=/imagenet")
    assert cfg.data.name == "imagefolder" and cfg.data.image_size == 256 and cfg.data.crop == "center"
    assert cfg.tokenizer.name == "patch_pca" and cfg.tokenizer.patch_size == 16
    assert cfg.tokenizer.latent_dim == 32 and resolve_latent_dim(cfg.tokenizer) == 32
    assert cfg.model.name == "DiT-L" and cfg.model.cond_ratio == 0.25 and cfg.model.encoder_depth is None
    assert cfg.data.batch_size == 2048 and cfg.optim.base_lr == 1e-4 and cfg.optim.weight_decay == 0
    assert cfg.optim.base_lr * cfg.data.batch_size / 256 == pytest.approx(8e-4)
    assert cfg.optim.warmup_epochs == 100 and cfg.trainer.max_epochs == 400
    assert cfg.schedule.name == "sigma_linear" and cfg.schedule.num_steps == 1000
    assert cfg.target.predict == "image" and cfg.target.input == "image"
    assert cfg.target.lambda_t == "inv_one_plus_sigma2" and cfg.target.residual_weight == 0.1
    assert cfg.model.class_cond is False
    assert cfg.probe.t == 10 and cfg.probe.noisy is False and cfg.probe.epochs == 90


def test_smaller_scales_keep_the_token_grid_and_d_proportion(compose):
    for scale in ("smoke", "cpu"):
        cfg = compose("experiment=ldae", f"scale={scale}")
        D = 3 * cfg.tokenizer.patch_size**2
        assert resolve_latent_dim(cfg.tokenizer) == max(1, round(32 * D / 768))


def test_struct_mode_rejects_misspelt_keys(compose):
    with pytest.raises(ConfigCompositionException, match=r"Could not override 'data\.batchsize'") as e:
        compose("data.batchsize=3")
    assert isinstance(e.value.__cause__, ConfigAttributeError), e.value.__cause__
    assert "Key 'batchsize' is not in struct" in str(e.value.__cause__)
    cfg = compose()
    assert OmegaConf.is_struct(cfg) and OmegaConf.is_struct(cfg.data)
    with pytest.raises(ConfigAttributeError, match=r"Key 'batchsize' is not in struct\n\s+full_key: data\.batchsize"):
        cfg.data.batchsize = 3


def test_group_override_check():
    check_group_overrides(["experiment=ldae", "scale=cpu", "tokenizer.latent_dim=8"])
    with pytest.raises(ConfigError, match="unknown schedule 'no_such_schedule'; allowed: cosine, ddpm_linear"):
        check_group_overrides(["schedule=no_such_schedule"])
    with pytest.raises(ConfigError, match="unknown tokenizer 'b'"):
        check_group_overrides(["tokenizer=patch_pca,b"])


@pytest.mark.parametrize("override, message", [
    ("tokenizer.latent_dim=1000", "tokenizer.latent_dim=1000 is out of range; allowed: 1..768"),
    ("tokenizer.latent_dim=0", "tokenizer.latent_dim=0 is out of range"),
    ("data.batch_size=0", "data.batch_size=0 must be an integer >= 1"),
    ("optim.base_lr=-1", "optim.base_lr=-1 must be > 0"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0 must be an integer >= 1"),
    ("data.image_size=30", "data.image_size=30 is not divisible by tokenizer.patch_size=4"),
    ("model.name=DiT-Q", "unknown model.name 'DiT-Q'"),
    ("probe.clean_input=noisy", "unknown probe.clean_input 'noisy'"),
])
def test_validation_messages(compose, override, message):
    with pytest.raises(ConfigError) as e:
        validate(compose(override))
    assert str(e.value).startswith(message)


def test_missing_data_folders(compose, tmp_path):
    with pytest.raises(ConfigError, match="data.root=/nonexistent has no 'train' folder"):
        validate(compose("data=imagefolder", "data.root=/nonexistent"))
    with pytest.raises(ConfigError, match="holds no Fashion-MNIST IDX files"):
        validate(compose("data=fashion_mnist", f"data.root={tmp_path}"))
