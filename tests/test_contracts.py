"""One contract test per registry kind, over ``registry.names(kind)`` with the tiny configs of ``tiny.py``."""

import inspect
import math

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny import TINY, generator_run

from genlab import config, registry
from genlab.config import RunConfig, component_from_dict
from genlab.generators.base import SampleOptions
from genlab.pipeline import Pipeline
from genlab.tokenizers.base import TokenSpec

CLASSES = [str(i) for i in range(10)]


def test_every_registered_name_has_a_tiny_config():
    for kind in registry.KINDS:
        assert sorted(TINY.get(kind, {})) == registry.names(kind), f"{kind}: add a tiny config to tests/tiny.py"


def test_registration_does_not_depend_on_import_order():
    import subprocess
    import sys

    code = "from genlab import config; c = config.load('quickstart'); print(c.generator.name, c.data.name)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.split() == ["dit", "openmoji"], out.stderr


# ----------------------------------------------------------------------------- generators


def test_the_pipeline_passes_each_images_seed_to_the_decoder(monkeypatch):
    """A stochastic decoder gets seed + i for image i, whatever the batch split."""
    pipe = tiny_pipeline("dit").eval()
    seen = []
    decode = pipe.tokenizer.decode
    monkeypatch.setattr(pipe.tokenizer, "decode", lambda tokens, seeds=None: seen.append(seeds) or decode(tokens))
    out = pipe.generate([0, 1, 2], seed=5, batch_size=2, options={"steps": 2})
    assert [s.tolist() for s in seen] == [[5, 6], [7]] and out.nfe_by_network == {"velocity": 2}


def digits(n=4):
    ds = registry.get("dataset", "digits")(registry.get("dataset", "digits").Config(resolution=16))
    return ds.get_batch(torch.arange(n))


def tiny_pipeline(name: str) -> Pipeline:
    torch.manual_seed(0)
    return Pipeline.from_config(RunConfig.from_dict(generator_run(name)), CLASSES)


@pytest.mark.parametrize("name", registry.names("generator"))
def test_generator_contract(name, tmp_path):
    pipe = tiny_pipeline(name)
    gen, tok = pipe.generator, pipe.tokenizer
    assert gen.check_spec(tok.token_spec) is None and gen.num_classes == len(CLASSES)
    batch = digits(4)
    tokens = tok.encode(batch["image"])
    out = gen.loss(tokens, batch["label"], torch.arange(4))
    assert out["loss"].ndim == 0 and math.isfinite(out["loss"].item())
    assert set(type(gen).LOG_KEYS) <= set(out)
    out["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in pipe.weights.parameters())

    pipe.eval()
    labels = torch.tensor([0, 3, 5, 9])
    a = pipe.generate(labels, seed=11)
    assert a.images.shape == (4, 3, 16, 16) and torch.isfinite(a.images).all() and a.nfe >= 1
    assert a.nfe_by_network and next(iter(a.nfe_by_network.values())) == a.nfe  # one NFE account, main first
    assert torch.equal(pipe.generate(labels, seed=11).images, a.images)  # same seeds, same images
    split = pipe.generate(labels, seed=11, batch_size=2).images  # image i depends on seed i only
    assert torch.allclose(split, a.images, atol=1e-5)
    assert not torch.equal(pipe.generate(labels, seed=12).images, a.images)

    pipe.save(tmp_path / "run")
    loaded = Pipeline.load(tmp_path / "run")
    for key, value in pipe.weights.state_dict().items():
        assert torch.equal(loaded.weights.state_dict()[key], value), key
    assert torch.equal(loaded.generate(labels, seed=11).images, a.images)


@pytest.mark.parametrize("name", registry.names("generator"))
def test_sampling_options_are_declared_and_checked(name):
    pipe = tiny_pipeline(name)
    cls = pipe.options_class
    assert issubclass(cls, SampleOptions)
    for field_name, f in cls.fields().items():
        assert f.metadata.get("help"), f"{cls.__name__}.{field_name} has no help text"
    numbers = [n for n, v in vars(cls()).items() if isinstance(v, float)]
    for n in numbers:
        for bad in (float("nan"), float("inf")):
            with pytest.raises(ValueError, match="finite"):
                pipe.sample_options({n: bad})
    with pytest.raises(ValueError, match="not a sampling option"):
        pipe.sample_options({"no_such_option": 1})


# ----------------------------------------------------------------------------- tokenizers


def build_tokenizer(name: str, tmp_path):
    cfg = dict(TINY["tokenizer"][name])
    if name == "sd-vae":
        from diffusers import AutoencoderKL

        torch.manual_seed(0)
        AutoencoderKL(block_out_channels=(32, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                      up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4,
                      norm_num_groups=8).save_pretrained(tmp_path / "vae")  # fmt: skip
        cfg["path"] = str(tmp_path / "vae")
    if name == "run":
        from genlab.runs.store import RunFolder

        inner = component_from_dict("tokenizer", {"name": "vqgan", **TINY["tokenizer"]["vqgan"]}, "tokenizer")
        RunFolder(tmp_path / "tok").write_component("tokenizer", config.to_dict(inner), inner.build(resolution=16))
        cfg["path"] = str(tmp_path / "tok")
    torch.manual_seed(0)
    return component_from_dict("tokenizer", {"name": name, **cfg}, "tokenizer").build(resolution=16).eval()


@pytest.mark.parametrize("name", registry.names("tokenizer"))
def test_tokenizer_contract(name, tmp_path):
    tok = build_tokenizer(name, tmp_path)
    spec = tok.token_spec
    assert isinstance(spec, TokenSpec)
    x = digits(2)["image"]
    if hasattr(tok, "fit_latent_stats"):
        tok.fit_latent_stats(iter([x]))
    tokens = tok.encode(x)
    if spec.kind == "multiscale":
        assert [tuple(t.shape) for t in tokens] == [(2, s, s) for s in spec.scales]
    else:
        assert tuple(tokens.shape) == (2, *spec.shape)
    if spec.discrete:
        flat = torch.cat([t.flatten() for t in tokens]) if isinstance(tokens, list) else tokens.flatten()
        assert flat.dtype == torch.long and 0 <= flat.min() and flat.max() < spec.vocab_size
        codes = tok.codes().indices_to_codes(tokens)
        assert codes.shape[:2] == (2, spec.code_dim)
    images = tok.decode(tokens)
    assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()
    seeded = tok.decode(tokens, seeds=torch.tensor([3, 4]))  # every decoder takes the per-sample seeds
    if not spec.stochastic_decoder:
        assert torch.equal(seeded, images)  # which a deterministic one ignores
    state = {k: v.contiguous() for k, v in tok.state_dict().items()}
    if state:
        save_file(state, str(tmp_path / "w.safetensors"))
        back = load_file(str(tmp_path / "w.safetensors"))
        assert all(torch.equal(back[k], v) for k, v in state.items())


# ----------------------------------------------------------------------------- the other kinds


@pytest.mark.parametrize("name", ["digits", "imagefolder", "shards"])
def test_dataset_contract(name, tmp_path):
    cfg = dict(TINY["dataset"][name])
    if name in ("imagefolder", "shards"):
        from PIL import Image

        for c in ("cat", "dog"):
            (tmp_path / "train" / c).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (20, 24), (40 * i, 90, 200)).save(tmp_path / "train" / c / f"{i}.png")
        cfg["root"] = str(tmp_path)
    if name == "shards":
        from genlab.data import imagefolder, shards

        folder = imagefolder.ImageFolderDataset(
            imagefolder.ImageFolderDataset.Config(root=str(tmp_path), num_classes=2)
        )
        shards.pack(folder, tmp_path / "shards", resolution=16, per_shard=3, progress=False)
        cfg["root"] = str(tmp_path / "shards")
    comp = component_from_dict("dataset", {"name": name, **cfg}, "data")
    ds = comp.build()
    item = ds[0]
    assert item["image"].shape == (3, 16, 16) and -1 <= item["image"].min() <= item["image"].max() <= 1
    assert item["label"].dtype == torch.long and len(ds.class_names) == (type(ds).num_classes(comp.cfg) or 2)


@pytest.mark.parametrize("name", registry.names("sampler"))
def test_sampler_contract(name):
    fn = registry.get("sampler", name)
    params = inspect.signature(fn).parameters
    assert list(params)[:3] == ["velocity", "noise", "ts"] and {"randn_like", "callback"} <= set(params)
    from genlab.samplers import timesteps

    steps_seen = []
    x = fn(lambda x, t: -x, torch.ones(2, 3), timesteps(4), callback=lambda i, t, x: steps_seen.append(i))
    assert x.shape == (2, 3) and torch.isfinite(x).all() and steps_seen[-1] == len(steps_seen) - 1 >= 1


@pytest.mark.parametrize("name", registry.names("refiner"))
def test_refiner_contract(name):
    from genlab.generators.dit import latent_spec

    cfg = component_from_dict("refiner", {"name": name, **TINY["refiner"][name]}, "refiner")
    ref = registry.get("refiner", name)(cfg.cfg, spec=latent_spec(3, 8), num_classes=3)
    x = torch.randn(2, 3, 8, 8)
    assert ref(x, torch.rand(2), torch.tensor([0, 3]), x).shape == x.shape
    assert type(ref).from_saved(ref.saved_config()).saved_config() == ref.saved_config()


@pytest.mark.parametrize("name", registry.names("task"))
def test_task_contract(name):
    task = registry.get("task", name)
    assert callable(task.train) and hasattr(task.Config, "from_dict")
    cfg = config.load(TINY["task"][name]["preset"], ["base_run=runs/x"] if name == "flowturbo-refiner" else [])
    assert isinstance(cfg, task.Config) and getattr(cfg, "task", "generator") == name


@pytest.mark.parametrize("kind", ["importer", "benchmark"])
def test_importer_and_benchmark_contract(kind):
    import argparse

    for name in registry.names(kind):
        entry = registry.get(kind, name)
        assert isinstance(entry.help, str) and entry.help and callable(entry.run), name
        parser = argparse.ArgumentParser()
        if kind == "importer":
            parser.add_argument("path")
            parser.add_argument("--out", required=True)
        entry.add_arguments(parser)  # its own flags, no clash with PATH and --out
        parser.parse_args(TINY[kind][name]["argv"])


@pytest.mark.parametrize("name", registry.names("evaluator"))
def test_evaluator_contract(name):
    ev = registry.get("evaluator", name)
    assert ev.keys and all(isinstance(k, str) for k in ev.keys)
