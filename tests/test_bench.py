import pytest
import torch

from genlab.bench import train as bench


def test_bench_train_tiny_json():
    # threads=1 and fp32: no precision probe, and steady on a CI machine that is busy with other tests
    result = bench.bench_train(seconds=0.5, device="cpu", sizes=("tiny",), precision="fp32", threads=1, progress=False)
    assert result["device"] == "cpu"
    assert result["precision"] == "fp32"
    assert result["torch"] == torch.__version__
    assert isinstance(result["diffusers"], str) and result["diffusers"]
    assert list(result["sizes"]) == ["tiny"]
    r = result["sizes"]["tiny"]
    for key in ("genlab_img_s", "diffusers_img_s", "ratio"):
        assert isinstance(r[key], float) and r[key] > 0, key
    assert r["ratio"] == pytest.approx(r["genlab_img_s"] / r["diffusers_img_s"], rel=0.01)
    assert r["batch"] == bench.SIZES["tiny"].batch_cpu
    assert r["rounds"] >= bench.MIN_ROUNDS
    assert r["genlab_params"] > 0
    assert abs(r["genlab_params"] - r["diffusers_params"]) <= 0.01 * r["genlab_params"]
    assert torch.get_num_threads() >= 1  # restored after the run


@pytest.mark.parametrize("size", ["small", "DiT-S/2"])
def test_models_have_the_same_parameters(size):
    s = bench.SIZES[size]
    with torch.device("meta"):  # shapes only: no memory, no init
        genlab_model = bench.build_genlab(s)
        diffusers_model, untied = bench.build_diffusers(s)
    assert bench.count_params(genlab_model) == bench.count_params(diffusers_model)
    assert untied > bench.count_params(diffusers_model)  # diffusers' per-block embedders, tied by build_diffusers
    emb = diffusers_model.transformer_blocks[0].norm1.emb
    assert all(b.norm1.emb is emb for b in diffusers_model.transformer_blocks)
    assert emb.class_embedder.dropout_prob == 0.0  # labels are dropped once, in the shared loss


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="unknown benchmark size"):
        bench.bench_train(seconds=0.1, device="cpu", sizes=("huge",))
    with pytest.raises(ValueError, match="precision"):
        bench.bench_train(seconds=0.1, device="cpu", sizes=("tiny",), precision="fp8")
