"""Token caches: what is written is what the tokenizer makes, interrupted writes resume, a cache only trains the
generator whose tokenizer made it, and training from a cache equals training from the images."""

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from genlab import config
from genlab.cachecmd import check_token_cache
from genlab.cli import main
from genlab.config import ConfigError, component_from_dict
from genlab.data.base import DataError, TensorImageDataset
from genlab.data.cache import TokenCacheDataset, training_images, write_token_cache
from genlab.pipeline import Pipeline
from genlab.tasks import train_run
from genlab.tokenizers.saved import fingerprint, load_tokenizer_folder

TINY_NET = {"ch": 16, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_levels": [], "mid_attn": False,
            "z_channels": 16, "norm_groups": 8}  # fmt: skip


def images(n=37, side=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, side, side), generator=g, dtype=torch.uint8)
    return TensorImageDataset(x, torch.arange(n) % 3, ["a", "b", "c"])


def build(spec, resolution=8, seed=0):
    torch.manual_seed(seed)
    return component_from_dict("tokenizer", dict(spec), "tokenizer").build(resolution=resolution).eval()


def meta(tok, spec, resolution=8):
    return {"tokenizer": {"name": spec["name"], "config": spec, "fingerprint": fingerprint(tok, spec)},
            "dataset": {"name": "random"}, "resolution": resolution,
            "token_spec": {"kind": tok.token_spec.kind, "shape": list(tok.token_spec.shape)}}  # fmt: skip


def read(path, **kw):
    return TokenCacheDataset(TokenCacheDataset.Config(path=str(path), **kw))


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "pixels", "patch": 2},
        {"name": "vqgan", "net": TINY_NET, "embed_dim": 4, "quantizer": {"codebook_size": 32}},
        {
            "name": "msvq-vae",
            "net": TINY_NET,
            "embed_dim": 4,
            "quantizer": {"vq": {"codebook_size": 32}, "scales": [1, 2, 4]},
        },
    ],
    ids=["continuous", "discrete", "multiscale"],
)
def test_cache_holds_exactly_what_the_tokenizer_encodes(tmp_path, spec):
    data, tok = images(), build(spec)
    write_token_cache(tok.encode, data, tmp_path / "c", meta=meta(tok, spec), flips=True, shard_size=10, batch_size=4)
    cache = read(tmp_path / "c")
    assert len(cache) == 37 and len(cache.shards) == 4 and cache.class_names == ["a", "b", "c"]
    idx = torch.tensor([36, 0, 11, 10, 25, 3])  # across shards, out of order
    x = data.get_batch(idx)["image"]
    flip = torch.tensor([True, False, True, False, False, True])
    got = cache.get_batch(idx, flip)
    with torch.no_grad():
        plain, mirrored = tok.encode(x), tok.encode(x.flip(-1))
    expected = (
        [torch.where(flip.view(-1, 1, 1), m, p) for p, m in zip(plain, mirrored)]
        if isinstance(plain, list)
        else torch.where(flip.view(-1, *[1] * (plain.ndim - 1)), mirrored, plain)
    )
    pairs = zip(got["tokens"], expected) if isinstance(plain, list) else [(got["tokens"], expected)]
    for a, b in pairs:
        assert a.dtype == b.dtype and torch.equal(a, b)
    assert torch.equal(got["label"], idx % 3)
    m = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert {"count", "tokenizer", "dataset", "resolution", "checksum"} <= set(m) and m["count"] == 37


def test_bfloat16_storage_and_no_flips(tmp_path):
    data, spec = images(), {"name": "pixels"}
    tok = build(spec)
    write_token_cache(tok.encode, data, tmp_path / "c", meta=meta(tok, spec), dtype=torch.bfloat16, shard_size=16)
    got = read(tmp_path / "c").get_batch(torch.arange(5), torch.ones(5, dtype=torch.bool))  # no flips cached: ignored
    assert got["tokens"].dtype == torch.float32
    assert torch.equal(got["tokens"], tok.encode(data.get_batch(torch.arange(5))["image"]).bfloat16().float())


class Interrupting(TensorImageDataset):
    """Raises KeyboardInterrupt when asked for index ``at`` the first time; counts the images handed out."""

    def __init__(self, base, at):
        super().__init__(base.images, base.labels, base.class_names)
        self.at, self.served = at, 0

    def get_batch(self, idx, flip=None):
        if self.at is not None and int(idx.max()) >= self.at:
            self.at = None
            raise KeyboardInterrupt
        self.served += len(idx)
        return super().get_batch(idx, flip)


def test_an_interrupted_cache_resumes_and_equals_an_uninterrupted_one(tmp_path):
    spec = {"name": "vqgan", "net": TINY_NET, "embed_dim": 4, "quantizer": {"codebook_size": 32}}
    tok, base = build(spec), images()
    write_token_cache(tok.encode, base, tmp_path / "whole", meta=meta(tok, spec), shard_size=10, batch_size=5)
    data = Interrupting(base, at=27)
    with pytest.raises(KeyboardInterrupt):
        write_token_cache(tok.encode, data, tmp_path / "c", meta=meta(tok, spec), shard_size=10, batch_size=5)
    assert not (tmp_path / "c" / "manifest.json").exists()
    with pytest.raises(DataError, match="interrupted"):
        read(tmp_path / "c")
    done = sorted(p.name for p in (tmp_path / "c").glob("shard_*"))
    assert done == ["shard_00000.safetensors", "shard_00001.safetensors"]
    data.served = 0
    write_token_cache(tok.encode, data, tmp_path / "c", meta=meta(tok, spec), shard_size=10, batch_size=5)
    assert data.served == 17  # only the two missing shards were encoded
    a, b = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("whole", "c"))
    assert a["checksum"] == b["checksum"] and a["shards"] == b["shards"]


def test_a_directory_holding_another_cache_is_refused(tmp_path):
    spec = {"name": "pixels"}
    tok = build(spec)
    write_token_cache(tok.encode, images(), tmp_path / "c", meta=meta(tok, spec))
    other = {"name": "pixels", "scale": 2.0}
    with pytest.raises(DataError, match="made differently.*tokenizer"):
        write_token_cache(tok.encode, images(), tmp_path / "c", meta=meta(build(other), other))


def test_a_cache_is_refused_for_a_generator_with_another_tokenizer(tmp_path):
    spec = {"name": "vqgan", "net": TINY_NET, "embed_dim": 4, "quantizer": {"codebook_size": 32}}
    tok = build(spec, seed=0)
    write_token_cache(tok.encode, images(), tmp_path / "c", meta=meta(tok, spec))
    cache, comp = read(tmp_path / "c"), component_from_dict("tokenizer", dict(spec), "tokenizer")
    check_token_cache(cache, tok, comp)  # the tokenizer that made it
    with pytest.raises(ConfigError, match="made by another tokenizer"):
        check_token_cache(cache, build(spec, seed=1), comp)  # same config, other weights


def tiny_sd_vae_run(root):
    """A tokenizer run folder holding a tiny random diffusers AutoencoderKL (the sd-vae adapter)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(32, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8)  # fmt: skip
    vae.save_pretrained(root / "vae")
    spec = {"name": "sd-vae", "path": str(root / "vae"), "scaling_factor": 0.5}
    tok = build(spec, resolution=16)
    (root / "tokrun" / "tokenizer").mkdir(parents=True)
    (root / "tokrun" / "tokenizer" / "config.json").write_text(json.dumps(spec))
    save_file(dict(tok.state_dict()), str(root / "tokrun" / "tokenizer" / "model.safetensors"))
    return root / "tokrun"


def test_genlab_cache_then_train_on_it_with_the_tokenizer_run(tmp_path):
    tokrun = tiny_sd_vae_run(tmp_path)
    out = tmp_path / "cache"
    argv = ["cache", "--tokenizer", str(tokrun), "--dataset", "digits", "--resolution", "16", "--out", str(out),
            "--shard-size", "700"]  # fmt: skip
    assert main(argv) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["count"] == 1617 and m["tokenizer"]["name"] == "sd-vae" and m["resolution"] == 16
    assert m["dataset"]["name"] == "digits" and m["token_spec"]["shape"] == [4, 8, 8]
    over = ["data.name=token-cache", f"data.path={out}", "tokenizer.name=run", f"tokenizer.path={tokrun}",
            "generator.patch_size=2", "train.steps=4", "train.checkpoint_every=0", "sample.per_class=1"]  # fmt: skip
    run = train_run(config.load("smoke", over), tmp_path / "gen")
    shutil.rmtree(tokrun)  # the generator run keeps its own copy of the tokenizer
    pipe = Pipeline.load(run)
    assert pipe.generate([0, 1], options={"steps": 2}).images.shape == (2, 3, 16, 16)
    assert main(["cache", "--tokenizer", str(run), "--out", str(tmp_path / "again"), "--shard-size", "700"]) == 0
    again = json.loads((tmp_path / "again" / "manifest.json").read_text())
    assert again["checksum"] == m["checksum"]  # the generator run's tokenizer is the same tokenizer
    with pytest.raises(ConfigError, match="made by another tokenizer"):
        train_run(config.load("smoke", [*over[:2], "generator.patch_size=2"]), tmp_path / "wrong")  # pixels


def test_training_from_a_cache_equals_training_from_the_images(tmp_path):
    assert main(["cache", "--tokenizer", "pixels", "--dataset", "digits", "--resolution", "16",
                 "--out", str(tmp_path / "c")]) == 0  # fmt: skip
    common = ["train.steps=3", "train.checkpoint_every=0", "sample.per_class=1"]
    a = train_run(config.load("smoke", common), tmp_path / "images")
    b = train_run(
        config.load("smoke", ["data.name=token-cache", f"data.path={tmp_path / 'c'}", *common]), tmp_path / "t"
    )
    wa, wb = (Pipeline.load(r).weights.state_dict() for r in (a, b))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_missing_cache_is_a_clear_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no token cache.*genlab cache"):
        config.load("smoke", ["data.name=token-cache", f"data.path={tmp_path / 'none'}"])


def test_a_tokenizer_run_loads_with_its_weights(tmp_path):
    tokrun = tiny_sd_vae_run(tmp_path)
    tok = load_tokenizer_folder(tokrun, resolution=16)
    assert tok.source["name"] == "sd-vae" and not any(
        p.requires_grad for p in build({"name": "run", "path": str(tokrun)}, 16).parameters()
    )


def test_a_cache_names_the_images_it_encoded_and_refuses_other_sizes(tmp_path):
    assert main(["cache", "--tokenizer", "pixels", "--dataset", "digits", "--resolution", "16", "--split", "val",
                 "--out", str(tmp_path / "c")]) == 0  # fmt: skip
    data = component_from_dict("dataset", {"name": "token-cache", "path": str(tmp_path / "c")}, "data")
    name, options, split = training_images(data)  # `genlab eval --run` compares with these images
    assert (name, split, options["resolution"]) == ("digits", "val", 16)
    assert training_images(component_from_dict("dataset", {"name": "digits"}, "data"))[::2] == ("digits", "train")
    with pytest.raises(DataError, match="data.classes=9 but the cache .* has classes 10"):
        read(tmp_path / "c", classes=9)
    with pytest.raises(DataError, match="data.resolution=32 but the cache .* has resolution 16"):
        read(tmp_path / "c", resolution=32)
