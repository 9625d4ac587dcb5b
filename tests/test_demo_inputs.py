"""Issue 27: the demo's handlers check the types an API client sends, and uploads reach genlab undecoded (a File
input), so a non-image or a decompression bomb is the app's one message, not a console traceback."""

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import generator_run

gr = pytest.importorskip("gradio", reason="the demo extra (gradio) is not installed")

from genlab.config import RunConfig  # noqa: E402
from genlab.demo import Demo, Limits, build_app, load_runs  # noqa: E402
from genlab.pipeline import Pipeline  # noqa: E402

LIMITS = Limits(max_images=4, max_steps=4, max_upload_pixels=64 * 64)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    path = tmp_path_factory.mktemp("demo") / "tiny"
    torch.manual_seed(0)
    Pipeline.from_config(RunConfig.from_dict(generator_run("maskgit")), [str(i) for i in range(10)]).save(path)
    return Demo(load_runs([path], device="cpu", limits=LIMITS), LIMITS)


@pytest.mark.parametrize("model", [["tiny"], {"name": "tiny"}, 3, None])
def test_a_model_of_another_type_is_refused(demo, model, capsys):
    with pytest.raises(gr.Error, match="unknown model"):
        demo.generate(model, ["0"], 1, "euler", 2, 1.0, 0)
    with pytest.raises(gr.Error, match="unknown model"):
        demo.reconstruct(model, None)
    assert capsys.readouterr().err.count("\n") == 2  # one console line per refused request


@pytest.mark.parametrize("classes", [{"0": 1}, [["0"]], [None], [True], 1.5])
def test_classes_of_another_type_are_refused(demo, classes):
    with pytest.raises(gr.Error, match="classes must be a list"):
        demo.generate("tiny", classes, 1, "euler", 2, 1.0, 0)


@pytest.mark.parametrize("sampler", [["euler"], {"a": 1}])
def test_a_sampler_of_another_type_is_refused_or_ignored(demo, sampler):
    run = demo.run("tiny")
    if run.has_sampler:
        with pytest.raises(gr.Error, match="unknown sampler"):
            demo.generate("tiny", ["0"], 1, sampler, 2, 1.0, 0)
    else:  # MaskGIT has no sampler choice: the value is not used
        assert len(demo.generate("tiny", ["0"], 1, sampler, 2, 1.0, 0)[0]) == 1


def test_uploads_that_are_not_images_are_one_message(demo, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb)  # a few KB on disk, 400M pixels declared
    for path, message in ((text, "not an image this demo can read"), (bomb, "at most 4,096 pixels|not an image")):
        for given in (str(path), {"path": str(path), "meta": {"_type": "gradio.FileData"}}):
            with pytest.raises(gr.Error, match=message):
                demo.reconstruct("tiny", given)
    for odd in ([1, 2, 3], {"url": "http://x"}, 7, np.zeros((4, 4))):
        with pytest.raises(gr.Error, match="must be an image file"):
            demo.reconstruct("tiny", odd)
    ok = tmp_path / "ok.png"
    Image.fromarray(np.full((20, 24, 3), 99, np.uint8)).save(ok)
    seen, recon, report = demo.reconstruct("tiny", str(ok))
    assert seen.shape == recon.shape == (16, 16, 3) and "PSNR" in report


def test_the_upload_input_does_not_decode(demo):
    app = build_app(list(demo.runs.values()), LIMITS)
    files = [b for b in app.blocks.values() if isinstance(b, gr.File)]
    assert files and not any(isinstance(b, gr.Image) and b.interactive for b in app.blocks.values())
