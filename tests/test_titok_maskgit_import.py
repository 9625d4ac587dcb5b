"""``genlab import titok-maskgit``: TiTok's MaskGIT generators against the public code.

``tests/fixtures/titok_maskgit_tiny.safetensors`` holds only tensors, made by a script run outside the repository on
bytedance/1d-tokenizer at 942a96f: ``modeling/maskgit.py``'s ``ImageBert`` (prefix ``bert.``: a transformers
``BertModel``) and ``UViTBert`` (``uvit.``) at 64 codes, 8 tokens, 10 classes, width 32, 2 layers, 2 heads,
intermediate 64, dropout 0 (their configs in the metadata), their init then every weight + N(0, 0.1); inputs 3 token
rows (about half [MASK]) and labels (3, 7, 0); outputs ``model(ids, labels, cond_drop_prob=0)`` and ``(..., 1)`` (the
null class), and ``generate(labels, guidance_scale=g, guidance_decay=d, randomize_temperature=0,
softmax_temperature_annealing=True, num_sample_steps=T)`` (greedy: no Gumbel noise) for d = constant (g 2),
linear (g 3), power-cosine (g 4) and T = 4, 8.
"""

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_titok_import import legacy_run  # noqa: F401  (the tiny public two-stage TiTok, a pytest fixture)

from genlab.cli import main
from genlab.config import component_from_dict
from genlab.generators.maskgit import MaskGIT
from genlab.imports.titok_maskgit import convert_titok_maskgit, titok_sample
from genlab.pipeline import Pipeline
from genlab.tokenizers.base import TokenSpec

FIXTURE = Path(__file__).parent / "fixtures" / "titok_maskgit_tiny.safetensors"
SPEC = TokenSpec("discrete", (8,), vocab_size=64)
TITOK_RULES = ("steps", "cfg", "cfg_schedule", "temperature", "temperature_schedule", "choice_temperature",
               "mask_schedule", "confidence", "logit_temperature", "logit_temperature_ramp")  # fmt: skip
GUIDANCE = {"constant": 2.0, "linear": 3.0, "power-cosine": 4.0}


@pytest.fixture(scope="module")
def fx():
    with safe_open(str(FIXTURE), "pt") as f:
        meta = {k: json.loads(v) for k, v in f.metadata().items()}
    return load_file(str(FIXTURE)), meta


def public(fx, layout: str) -> dict:
    """The public state dict as the hub saves it (``ImageBert``'s keys under ``model.``)."""
    return {k[len(layout) + 1 :]: v for k, v in fx[0].items() if k.startswith(f"{layout}.")}


def build(fx, layout: str, **overrides) -> MaskGIT:
    sd = {k.removeprefix("model."): v for k, v in public(fx, layout).items()}
    cfg, facts, state = convert_titok_maskgit(sd, fx[1][layout]["model"]["generator"])
    assert facts == {"model_type": "ViT" if layout == "bert" else "UViT", "vocab_size": 64, "num_tokens": 8,
                     "num_classes": 10}  # fmt: skip
    model = component_from_dict("generator", {**cfg, **overrides}, "generator").build(spec=SPEC, num_classes=10)
    model.load_state_dict({**model.state_dict(), **state} if overrides else state, strict=True)  # pre-LN: + a norm
    return model.eval()


@pytest.mark.parametrize("layout", ["bert", "uvit"])
def test_logits_match_the_public_generator(fx, layout):
    model, t = build(fx, layout), fx[0]
    with torch.no_grad():
        cond = model(t["in.ids"], t["in.labels"])
        null = model(t["in.ids"], torch.full_like(t["in.labels"], 10))
    ref = t[f"out.{layout}.logits"]
    assert (cond - ref).abs().max() <= 1e-5 * ref.abs().max()  # measured: bert 4.8e-7, uvit 9.5e-7 (sizes 1.6, 1.9)
    assert (null - t[f"out.{layout}.logits_null"]).abs().max() <= 1e-5 * ref.abs().max()


@pytest.mark.parametrize("layout", ["bert", "uvit"])
def test_greedy_tokens_equal_the_public_generate(fx, layout):
    """TiTok's rules as MaskGIT options: arccos schedule, raw-logit ranking, annealed temperatures, its guidance."""
    model, t = build(fx, layout), fx[0]
    for decay, scale in GUIDANCE.items():
        for T in (4, 8):
            conf = {"guidance_decay": decay, "guidance_scale": scale, "randomize_temperature": 0.0, "num_steps": T}
            options = MaskGIT.SampleOptions(**titok_sample(conf, "ViT", 8))
            tokens = model.decode(t["in.labels"], torch.arange(3), options).tokens
            assert torch.equal(tokens, t[f"out.{layout}.greedy.{decay}.T{T}"]), (decay, T)


@pytest.mark.parametrize("own", [{"mask_schedule": "cosine"}, {"confidence": "log_prob"}, {"cfg_schedule": "linear"}])
def test_genlabs_own_rules_decode_other_tokens(fx, own):
    """Each option is needed: with genlab's own rule in its place some of the public tokens come out different."""
    t, differ = fx[0], 0
    for layout in ("bert", "uvit"):
        model = build(fx, layout)
        for decay, scale in GUIDANCE.items():
            for T in (4, 8):
                conf = {"guidance_decay": decay, "guidance_scale": scale, "randomize_temperature": 0.0, "num_steps": T}
                rules = {**titok_sample(conf, "ViT", 8), **own}
                if rules["cfg_schedule"] == "linear" and decay != "linear":
                    continue
                tokens = model.decode(t["in.labels"], torch.arange(3), MaskGIT.SampleOptions(**rules)).tokens
                differ += not torch.equal(tokens, t[f"out.{layout}.greedy.{decay}.T{T}"])
    assert differ > 0


@pytest.mark.parametrize("overrides", [{"norm_position": "pre"}, {"gelu": "tanh"}])
def test_the_layout_options_matter(fx, overrides):
    model, t = build(fx, "bert", **overrides), fx[0]
    with torch.no_grad():
        diff = (model(t["in.ids"], t["in.labels"]) - t["out.bert.logits"]).abs().max()
    assert diff > 1e-4  # beyond the 1e-5 tolerance (measured: pre-LN 0.51, tanh GELU 2.3e-4; norm_eps 1e-6: 8e-6)


def masked_per_step(schedule: str, N: int = 64, T: int = 8) -> list[int]:
    spec = TokenSpec("discrete", (N,), vocab_size=16)
    model = MaskGIT(MaskGIT.Config(depth=1, hidden_size=16, num_heads=2), spec=spec, num_classes=2).eval()
    options = MaskGIT.SampleOptions(steps=T, mask_schedule=schedule)
    ids, labels, seeds = torch.full((1, N), 16), torch.tensor([0]), torch.tensor([0])
    counts = []
    with torch.no_grad():
        for i in range(T):
            ids = model.decode_step(ids, labels, seeds, options, i, torch.tensor([N]))
            counts.append(int((ids == 16).sum()))
    return counts


def test_arccos_schedule_masks_as_titok():
    """The issue's numbers: 64 tokens x 8 steps."""
    assert masked_per_step("arccos") == [58, 53, 48, 42, 36, 29, 20, 0]
    assert masked_per_step("cosine") == [62, 59, 53, 45, 35, 24, 12, 0]  # genlab's default, unchanged


@pytest.fixture
def tokenizer_run(legacy_run):  # noqa: F811  (the fixture imported above)
    """A tiny public two-stage TiTok (tests/test_titok_import.py: 8 tokens, 64 codes, MaskGIT-VQGAN's decoder)
    imported as a tokenizer run: the released pairing."""
    return legacy_run[0]


def write_checkpoint(fx, folder: Path, layout: str = "bert", **conf) -> Path:
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in public(fx, layout).items()}, str(folder / "model.safetensors"))
    config = fx[1][layout]
    config["model"]["generator"].update(conf)
    (folder / "config.json").write_text(json.dumps(config))
    return folder / "model.safetensors"


def test_the_import_samples_images_with_titoks_settings(fx, tokenizer_run, tmp_path):
    path = write_checkpoint(fx, tmp_path / "hub", guidance_scale=3.0)
    assert main(["import", "titok-maskgit", str(path), "--tokenizer", str(tokenizer_run), "--out",
                 str(tmp_path / "run")]) == 0  # fmt: skip
    pipe = Pipeline.load(tmp_path / "run")
    conf = {"guidance_decay": "linear", "guidance_scale": 3.0, "randomize_temperature": 0.0, "num_steps": 4}
    t = fx[0]
    tokens = pipe.generator.decode(
        t["in.labels"], torch.arange(3), MaskGIT.SampleOptions(**titok_sample(conf, "ViT", 8))
    )
    assert torch.equal(tokens.tokens, t["out.bert.greedy.linear.T4"])
    images = pipe.tokenizer.decode(tokens.tokens)
    assert images.shape == (3, 3, 32, 32) and images.isfinite().all()
    sample = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["sample"]
    assert {k: sample[k] for k in TITOK_RULES} == {
        "steps": 4, "cfg": 4.0, "cfg_schedule": "step", "temperature": 2.0, "temperature_schedule": "anneal",
        "choice_temperature": 2.0, "mask_schedule": "arccos", "confidence": "logit", "logit_temperature": 0.5,
        "logit_temperature_ramp": 0.8}  # fmt: skip


def test_bad_imports_are_one_line_and_write_nothing(fx, tokenizer_run, tmp_path, capsys):
    path = write_checkpoint(fx, tmp_path / "hub")
    cases = {"no-tokenizer": [str(path)], "heads": [str(path), "--tokenizer", str(tokenizer_run), "--num-heads", "3"]}
    hub, sd = tmp_path / "hub", public(fx, "bert")  # each file beside the hub's config.json
    save_file({k: v for k, v in sd.items() if "layer.1.output.dense" not in k}, str(hub / "cut.safetensors"))
    cases["cut"] = [str(hub / "cut.safetensors"), "--tokenizer", str(tokenizer_run)]
    short = {**sd, "model.embeddings.position_embeddings.weight": sd["model.embeddings.position_embeddings.weight"][:5]}
    save_file(short, str(hub / "short.safetensors"))  # 4 tokens: not the tokenizer's 8
    cases["tokens"] = [str(hub / "short.safetensors"), "--tokenizer", str(tokenizer_run)]
    (hub / "junk.safetensors").write_bytes(b"not a checkpoint")
    cases["junk"] = [str(hub / "junk.safetensors"), "--tokenizer", str(tokenizer_run)]
    nan = {**sd, "model.lm_head.bias": torch.full_like(sd["model.lm_head.bias"], float("nan"))}
    save_file(nan, str(hub / "nan.safetensors"))
    cases["nan"] = [str(hub / "nan.safetensors"), "--tokenizer", str(tokenizer_run)]
    cases["no-run"] = [str(path), "--tokenizer", str(tmp_path / "nowhere")]
    bad = json.loads((hub / "config.json").read_text())
    bad["model"]["generator"]["guidance_scale"] = float("nan")
    (tmp_path / "nan.json").write_text(json.dumps(bad))
    cases["nan-config"] = [str(path), "--tokenizer", str(tokenizer_run), "--config", str(tmp_path / "nan.json")]
    expected = {"no-tokenizer": "--tokenizer", "heads": "3 attention heads", "cut": "missing", "tokens": "4 tokens",
                "junk": "safetensors", "nan": "NaN", "no-run": "nowhere",
                "nan-config": "cfg must be a finite number"}  # fmt: skip
    for name, argv in cases.items():
        capsys.readouterr()
        assert main(["import", "titok-maskgit", *argv, "--out", str(tmp_path / name)]) == 2, name
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected[name] in err, (name, err)
        assert not (tmp_path / name).exists(), name


# The released generators' public modules (bytedance/1d-tokenizer 942a96f, ImageBert / UViTBert built from
# configs/infer/TiTok/titok_{l32,b64,s128}.yaml on the meta device): parameters as its code counts them.
PUBLIC = {"l32": ("bert", 32, 768, 24, 3072, 177_202_432), "b64": ("bert", 64, 768, 24, 3072, 177_227_008),
          "s128": ("uvit", 128, 1024, 20, 4096, 294_990_848)}  # fmt: skip


def public_shapes(layout: str, N: int, D: int, depth: int, inner: int, V: int = 4096, C: int = 1000) -> dict:
    """The public state dict's names and shapes (meta tensors) at a released size."""
    shapes = {"lm_head.weight": (V, D), "lm_head.bias": (V,)}
    mlp = {"weight": (inner, D), "bias": (inner,)}, {"weight": (D, inner), "bias": (D,)}
    if layout == "bert":
        shapes.update({"embeddings.word_embeddings.weight": (V + C + 2, D), "embeddings.LayerNorm.weight": (D,),
                       "embeddings.position_embeddings.weight": (N + 1, D), "embeddings.LayerNorm.bias": (D,),
                       "embeddings.token_type_embeddings.weight": (2, D)})  # fmt: skip
        for i in range(depth):
            p = f"encoder.layer.{i}."
            for part in (
                "attention.self.query",
                "attention.self.key",
                "attention.self.value",
                "attention.output.dense",
            ):
                shapes.update({f"{p}{part}.weight": (D, D), f"{p}{part}.bias": (D,)})
            for part in ("attention.output.LayerNorm", "output.LayerNorm"):
                shapes.update({f"{p}{part}.weight": (D,), f"{p}{part}.bias": (D,)})
            shapes.update({f"{p}intermediate.dense.{k}": v for k, v in mlp[0].items()})
            shapes.update({f"{p}output.dense.{k}": v for k, v in mlp[1].items()})
    else:
        shapes.update({"embeddings.weight": (V + C + 2, D), "pos_embed": (1, N + 1, D), "norm.weight": (D,),
                       "norm.bias": (D,)})  # fmt: skip
        names = [f"in_blocks.{j}" for j in range(depth // 2)] + ["mid_block"]
        for p in names + [f"out_blocks.{j}" for j in range(depth // 2)]:
            shapes.update({f"{p}.{n}.{k}": (D,) for n in ("norm1", "norm2") for k in ("weight", "bias")})
            shapes.update(
                {f"{p}.attn.qkv.weight": (3 * D, D), f"{p}.attn.proj.weight": (D, D), f"{p}.attn.proj.bias": (D,)}
            )
            shapes.update({f"{p}.mlp.fc1.{k}": v for k, v in mlp[0].items()})
            shapes.update({f"{p}.mlp.fc2.{k}": v for k, v in mlp[1].items()})
            if p.startswith("out_blocks"):
                shapes.update({f"{p}.skip_linear.weight": (D, 2 * D), f"{p}.skip_linear.bias": (D,)})
    return {k: torch.empty(v, device="meta") for k, v in shapes.items()}


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_paper_sizes_through_the_import_path(name):
    layout, N, D, depth, inner, count = PUBLIC[name]
    sd = public_shapes(layout, N, D, depth, inner)
    assert sum(v.numel() for v in sd.values()) == count  # the names and shapes are the public module's
    cfg, facts, state = convert_titok_maskgit(sd, {})  # heads from the released widths (16)
    spec = TokenSpec("discrete", (N,), vocab_size=4096)
    with torch.device("meta"):
        model = component_from_dict("generator", cfg, "generator").build(spec=spec, num_classes=facts["num_classes"])
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert own == {k: tuple(v.shape) for k, v in state.items()}
    # BERT's token-type table (2 x 768) is folded into the position table: 1,536 fewer; U-ViT's count is equal
    assert sum(p.numel() for p in model.parameters()) == count - (2 * D if layout == "bert" else 0)


def test_titoks_training_mask_ratio():
    """arccos(u) / (pi/2) (TiTok's masking_input_tokens): median 2/3, against the cosine's cos(pi/4) = 0.707."""
    model = MaskGIT(MaskGIT.Config(depth=1, hidden_size=16, num_heads=2, mask_schedule="arccos"), spec=SPEC,
                    num_classes=2)  # fmt: skip
    r = model.mask_ratio(torch.arange(4000), "cpu")
    assert 0 < r.min() and r.max() <= 1 and abs(float(r.median()) - 2 / 3) < 0.02
    model.cfg.mask_schedule = "cosine"
    assert abs(float(model.mask_ratio(torch.arange(4000), "cpu").median()) - 0.7071) < 0.02


LAYOUTS = {"bert": {"norm_position": "post", "head": "linear", "gelu": "exact", "norm_eps": 1e-12},
           "uvit": {"depth": 3, "skips": True, "head": "linear", "gelu": "exact", "qkv_bias": False,
                    "embed_norm": False}}  # fmt: skip


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_layouts_gradients_do_not_depend_on_the_thread_count(layout):
    """The new layouts keep genlab's rule (tests/test_threads.py covers the registry's tiny configs)."""
    grads, before = [], torch.get_num_threads()
    for n in (1, 2):
        torch.manual_seed(0)
        cfg = MaskGIT.Config(**{"depth": 2, "hidden_size": 32, "num_heads": 2, **LAYOUTS[layout]})
        model = MaskGIT(cfg, spec=SPEC, num_classes=10)
        torch.set_num_threads(n)
        try:
            tokens = torch.randint(0, 64, (4, 8), generator=torch.Generator().manual_seed(1))
            model.loss(tokens, torch.tensor([0, 1, 2, 3]), torch.arange(4))["loss"].backward()
        finally:
            torch.set_num_threads(before)
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
    assert all(torch.equal(g, grads[1][k]) for k, g in grads[0].items())


def test_titoks_temperatures_in_sampled_decoding():
    """Sampled (not greedy) decoding: the last step draws at temperature 0 under ``anneal``; dividing the logits by
    s before the draw is drawing at temperature s·t (same per-sample uniforms), whatever the seed."""
    model = MaskGIT(MaskGIT.Config(depth=1, hidden_size=32, num_heads=2), spec=SPEC, num_classes=10).eval()
    labels, seeds = torch.arange(6) % 10, torch.arange(6)
    ids, T = torch.full((6, 8), 64), 4
    ids[:, :6] = torch.randint(0, 64, (6, 6), generator=torch.Generator().manual_seed(0))  # two left to draw
    with torch.no_grad():
        logits = model.guided_logits(ids, labels, 1.0)
        last = model.decode_step(ids, labels, seeds, MaskGIT.SampleOptions(steps=T, temperature=5.0,
                                 temperature_schedule="anneal"), T - 1, torch.tensor([8] * 6))  # fmt: skip
        assert torch.equal(last[:, 6:], logits[:, 6:].argmax(-1))
        rules = dict(steps=T, choice_temperature=0.0, confidence="logit", cfg=2.0)
        scaled = model.decode(labels, seeds, MaskGIT.SampleOptions(**rules, temperature=1.5, logit_temperature=2.0))
        plain = model.decode(labels, seeds, MaskGIT.SampleOptions(**rules, temperature=3.0))
        greedy = model.decode(labels, seeds, MaskGIT.SampleOptions(**rules, temperature=0.0))
    assert torch.equal(scaled.tokens, plain.tokens) and not torch.equal(plain.tokens, greedy.tokens)
