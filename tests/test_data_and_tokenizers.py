"""Datasets (digits; openmoji and imagefolder have their own files) and the tokenizers of this slice."""

import pytest
import torch

from genlab import registry
from genlab.data.digits import DigitsDataset
from genlab.tokenizers.base import TokenizerError
from genlab.tokenizers.pixels import PixelTokenizer
from genlab.tokenizers.sdvae import SDVAETokenizer


def test_digits_contract_and_split():
    train = DigitsDataset(DigitsDataset.Config(resolution=16, split="train"))
    val = DigitsDataset(DigitsDataset.Config(resolution=16, split="val"))
    item = train[0]
    assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.float32
    assert -1 <= item["image"].min() and item["image"].max() <= 1 and item["label"].dtype == torch.long
    assert train.class_names == [str(d) for d in range(10)] and DigitsDataset.num_classes(None) == 10
    assert len(train) + len(val) == 1797
    batch = train.get_batch(torch.tensor([0, 1, 2]))
    assert batch["image"].shape == (3, 3, 16, 16) and batch["label"].shape == (3,)


def test_every_dataset_is_registered_with_a_config():
    for name in registry.names("dataset"):
        cls = registry.get("dataset", name)
        assert hasattr(cls, "Config") and hasattr(cls, "num_classes")


@pytest.mark.parametrize("patch", [1, 2, 4])
def test_pixel_tokenizer_round_trips(patch):
    tok = PixelTokenizer(PixelTokenizer.Config(patch=patch, scale=2.0), resolution=16)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    z = tok.encode(x)
    assert z.shape == (2, *tok.token_spec.shape) == (2, 3 * patch * patch, 16 // patch, 16 // patch)
    assert torch.allclose(tok.decode(z), x)
    with pytest.raises(TokenizerError, match="not divisible"):
        PixelTokenizer(PixelTokenizer.Config(patch=3), resolution=16)


def test_sd_vae_adapter_loads_a_diffusers_folder(tmp_path):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(32, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8)  # fmt: skip
    vae.save_pretrained(tmp_path / "vae")
    tok = SDVAETokenizer(SDVAETokenizer.Config(path=str(tmp_path / "vae"), scaling_factor=0.5), resolution=16)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    z = tok.encode(x)
    expected = vae.encode(x).latent_dist.mean * 0.5
    assert torch.allclose(z, expected, atol=1e-5)
    assert tok.token_spec.shape == (4, 8, 8)  # two blocks: downsampling by 2
    assert tok.decode(z).shape == (1, 3, 16, 16)


def test_sd_vae_without_weights_is_a_clear_error(tmp_path):
    with pytest.raises(TokenizerError, match="needs weights"):
        SDVAETokenizer(SDVAETokenizer.Config(path=""), resolution=256)
    with pytest.raises(TokenizerError, match="cannot load an AutoencoderKL"):
        SDVAETokenizer(SDVAETokenizer.Config(path=str(tmp_path / "missing")), resolution=256)
