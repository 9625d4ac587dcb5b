"""LlamaGen's class-conditional GPT (genlab.imports.llamagen) against LlamaGen's own code.

``tests/fixtures/llamagen_gpt_tiny.safetensors`` holds only tensors, made by a script run outside the repository on
FoundationVision/LlamaGen at ce98ec4: ``Transformer(ModelArgs(dim=32, n_layer=2, n_head=2, vocab_size=64,
num_classes=10, cls_token_num=1, block_size=16, model_type="c2i", multiple_of=32))`` with every dropout 0, its init
then every weight + N(0, 0.3); inputs 2 random token grids (4 x 4) and labels (3, 7); outputs the teacher-forced
logits ``model(idx=tokens[:, :-1], cond_idx=labels)`` (train mode, label drop off) and ``generate(model, labels, 16,
cfg_scale=4.0, sample_logits=False)`` (greedy, with LlamaGen's KV cache and CFG).
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genlab.config import component_from_dict
from genlab.generators.gpt import decode
from genlab.imports.llamagen import convert_llamagen_gpt
from genlab.tokenizers.base import TokenSpec

FIXTURE = Path(__file__).parent / "fixtures" / "llamagen_gpt_tiny.safetensors"
SPEC = TokenSpec("discrete", (4, 4), vocab_size=64, code_dim=8)


@pytest.fixture(scope="module")
def fx():
    return load_file(str(FIXTURE))


def build(fx, class_rope="zero"):
    cfg, facts, state = convert_llamagen_gpt({k[4:]: v for k, v in fx.items() if k.startswith("gpt.")}, num_heads=2)
    assert facts == {"vocab_size": 64, "num_classes": 10} and cfg["ffn_multiple_of"] == 32
    model = component_from_dict("generator", {**cfg, "class_rope": class_rope}, "generator").build(
        spec=SPEC, num_classes=10
    )
    model.load_state_dict(state)
    return model.eval()


def test_teacher_forced_logits_and_greedy_tokens_match_llamagen(fx):
    model = build(fx)
    seq = torch.cat([fx["in.labels"][:, None], fx["in.tokens"][:, :-1]], dim=1)
    with torch.no_grad():
        logits = model(seq)
        assert (logits - fx["out.logits"]).abs().max() <= 1e-5 * fx["out.logits"].abs().max()
        opts = model.SampleOptions(temperature=0.0, cfg=4.0)
        tokens = decode(model, fx["in.labels"], torch.tensor([0, 1]), 16, opts, null_class=10)
    assert torch.equal(tokens, fx["out.greedy_cfg4"].long())


def test_genlabs_own_class_rope_is_a_different_model(fx):
    seq = torch.cat([fx["in.labels"][:, None], fx["in.tokens"][:, :-1]], dim=1)
    with torch.no_grad():
        diff = (build(fx, "identity")(seq) - fx["out.logits"]).abs().max()
    assert diff > 1e-2  # the option is what makes the imported model compute LlamaGen's logits


def test_paper_sizes_through_the_import_path():
    from genlab.generators.gpt import GPT

    for depth, D, heads, paper in ((12, 768, 12, 111e6), (24, 1024, 16, 343e6)):
        with torch.device("meta"):
            own = GPT(GPT.Config(depth=depth, hidden_size=D, num_heads=heads, ffn_multiple_of=256),
                      spec=TokenSpec("discrete", (16, 16), vocab_size=16384, code_dim=8), num_classes=1000)  # fmt: skip
        sd = {k.replace("feed_forward.w2", "feed_forward.X").replace("feed_forward.w3", "feed_forward.w2")
              .replace("feed_forward.X", "feed_forward.w3"): v for k, v in own.state_dict().items()}  # fmt: skip
        cfg, _, state = convert_llamagen_gpt(sd)
        n = sum(v.numel() for v in state.values())
        assert cfg["num_heads"] == heads and abs(n - paper) / paper < 0.01, (n, paper)


def test_genlab_import_llamagen_gpt_and_a_wrong_file(fx, tmp_path):
    import yaml
    from test_dit_import import genlab
    from tiny import VQ_TOKENIZER

    from genlab import config
    from genlab.pipeline import Pipeline
    from genlab.runs.store import RunFolder

    tok = component_from_dict("tokenizer", {**VQ_TOKENIZER, "quantizer": {"name": "vq", "codebook_size": 64}},
                              "tokenizer")  # fmt: skip
    RunFolder(tmp_path / "vq").write_component("tokenizer", config.to_dict(tok), tok.build(resolution=8))
    (tmp_path / "vq" / "config.yaml").write_text(yaml.safe_dump({"data": {"resolution": 8}}))
    torch.save({"model": {k[4:]: v for k, v in fx.items() if k.startswith("gpt.")}}, tmp_path / "c2i.pt")
    r = genlab("import", "llamagen-gpt", tmp_path / "c2i.pt", "--vq", tmp_path / "vq", "--num-heads", 2,
               "--out", tmp_path / "run")  # fmt: skip
    assert r.returncode == 0, r.stderr
    pipe = Pipeline.load(tmp_path / "run")
    assert pipe.generator.cfg.class_rope == "zero" and pipe.sample_options({}).cfg == 1.5
    seq = torch.cat([fx["in.labels"][:, None], fx["in.tokens"][:, :-1]], dim=1)
    with torch.no_grad():
        assert (pipe.generator(seq) - fx["out.logits"]).abs().max() <= 1e-5 * fx["out.logits"].abs().max()
    torch.save({"model": {"x_embedder.proj.weight": torch.zeros(2, 2)}}, tmp_path / "dit.pt")
    r = genlab("import", "llamagen-gpt", tmp_path / "dit.pt", "--vq", tmp_path / "vq", "--out", tmp_path / "bad")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()


def test_llamagen_vq_tokens_exactly_and_decoding_match_llamagen(tmp_path):
    """``tests/fixtures/llamagen_vq_tiny.safetensors``: LlamaGen's VQModel (ce98ec4) with codebook 64 x 8 (l2), its
    Encoder/Decoder rebuilt at ch=32, ch_mult (1, 1), 1 res block, z 32; weights + N(0, 0.05); 2 images 8x8 uniform
    in [-1, 1]; outputs the code ids and ``decode_code`` of them."""
    from test_dit_import import genlab

    from genlab.imports.llamagen import convert_llamagen_vq
    from genlab.pipeline import load_tokenizer

    fx = load_file(str(Path(__file__).parent / "fixtures" / "llamagen_vq_tiny.safetensors"))
    sd = {k[3:]: v for k, v in fx.items() if k.startswith("vq.")}
    cfg, state = convert_llamagen_vq(sd)
    assert cfg["net"]["attn_levels"] == [-1] and cfg["quantizer"]["l2_norm"]
    torch.save({"model": sd}, tmp_path / "vq.pt")
    r = genlab("import", "llamagen-vq", tmp_path / "vq.pt", "--resolution", 8, "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    _, tok = load_tokenizer(tmp_path / "run")
    with torch.no_grad():
        ids = tok.encode(fx["in.image"])
        assert torch.equal(ids, fx["out.ids"])
        decoded = tok.decode(ids)
    assert (decoded - fx["out.decoded"]).abs().max() <= 1e-5
    r = genlab("import", "llamagen-vq", tmp_path / "nothing.pt", "--out", tmp_path / "bad")
    assert r.returncode == 2 and not (tmp_path / "bad").exists()
