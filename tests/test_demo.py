"""The Gradio demo, served on localhost: through gradio_client, over plain HTTP, and in headless Chromium."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genlab.cli import main
from genlab.pipeline import RunError

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
gr = pytest.importorskip("gradio", reason="the demo extra (gradio) is not installed")
client_mod = pytest.importorskip("gradio_client", reason="gradio_client is not installed")

from genlab.demo import Limits, build_app, launch_kwargs, load_runs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
LIMITS = Limits(max_images=8, max_steps=20)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(smoke_run):
    """(url, model name) of the demo over the smoke run, launched in this process on 127.0.0.1."""
    app = build_app(load_runs([smoke_run], device="cpu", limits=LIMITS), LIMITS)
    _, url, _ = app.launch(
        server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, **launch_kwargs(LIMITS)
    )
    yield url, smoke_run.name
    app.close()


@pytest.fixture(scope="module")
def client(served):
    return client_mod.Client(served[0], verbose=False)


def generate(client, model, classes=("0", "3"), n=3, seed=7, steps=4, guidance=1.0, interval=(0.0, 1.0)):
    args = (model, list(classes), n, "euler", steps, guidance, seed)  # the interval may be left out
    args += tuple(interval) if tuple(interval) != (0.0, 1.0) else ()
    return client.predict(*args, api_name="/generate")


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_generate_count_size_and_seed(client, served):
    gallery, info, grid, command_file, command = generate(client, served[1])
    assert len(gallery) == 6
    images = [pixels(item["image"]) for item in gallery]
    assert all(im.shape == (16, 16, 3) for im in images)
    assert "6 images" in info and "NFE" in info
    again = [pixels(item["image"]) for item in generate(client, served[1])[0]]
    assert all(np.array_equal(a, b) for a, b in zip(images, again))
    other = [pixels(item["image"]) for item in generate(client, served[1], seed=8)[0]]
    assert not np.array_equal(images[0], other[0])
    assert np.array_equal(images[1], other[0])  # image i uses seed + i
    assert Path(command_file).read_text().strip() == command


def test_command_line_reproduces_the_grid(client, served, smoke_run, tmp_path):
    _, _, grid, _, command = generate(client, served[1], guidance=2.0, interval=(0.25, 0.75))
    argv = shlex.split(command)
    assert "--guidance-interval" in argv
    assert argv[:2] == ["genlab", "sample"] and argv[argv.index("--run") + 1] == str(smoke_run)
    argv[argv.index("--out") + 1] = str(tmp_path / "grid.png")
    assert main(argv[1:]) == 0
    assert np.array_equal(pixels(grid), pixels(tmp_path / "grid.png"))


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(steps=500), "steps must be between 1 and 20"),
        (dict(steps=0), "steps must be between 1 and 20"),
        (dict(n=5), "at most 8 per request"),  # 5 x 2 classes
        (dict(guidance=-1.0), "guidance scale must be between 0 and 15"),
        (dict(classes=("no such class",)), "unknown class"),
        (dict(classes=()), "choose at least one class"),
        (dict(seed=-3), "seed must be between"),
        (dict(interval=(0.8, 0.2)), "starts after it ends"),
    ],
)
def test_out_of_range_gets_the_apps_error(client, served, change, message):
    with pytest.raises(client_mod.exceptions.AppError, match=message):
        generate(client, served[1], **change)


def test_reconstruct_pixels_is_exact(client, served, tmp_path):
    path = tmp_path / "upload.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(path)
    seen, recon, report = client.predict(served[1], client_mod.handle_file(str(path)), api_name="/reconstruct")
    assert pixels(seen).shape == pixels(recon).shape == (16, 16, 3)
    assert np.array_equal(pixels(seen), pixels(recon))
    assert "256 tokens" in report and "inf" in report


def test_no_files_served_from_outside_the_cache(served, smoke_run):
    for target in (smoke_run / "config.yaml", Path("/etc/passwd"), ROOT / "pyproject.toml"):
        url = f"{served[0]}gradio_api/file={target}"
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url, timeout=10)
        assert e.value.code in (403, 404)


def test_about_card(smoke_run):
    from genlab.demo import model_card

    (run,) = load_runs([smoke_run], device="cpu")
    card = model_card(run)
    assert "parameters" in card and "last logged step 40" in card and "| loss |" in card


def test_startup_errors(smoke_run, tmp_path, capsys):
    with pytest.raises(RunError, match="does not exist"):
        load_runs([tmp_path / "missing"])
    partial = tmp_path / "partial"
    shutil.copytree(smoke_run, partial, ignore=shutil.ignore_patterns("generator"))
    with pytest.raises(RunError, match="generator/model.safetensors"):
        load_runs([smoke_run, partial])
    assert main(["demo", "--run", str(partial)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a finished genlab run" in err[0]


def test_the_page_in_headless_chromium(served):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium); .ci/run installs it")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    ARTIFACTS.mkdir(exist_ok=True)
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=args, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(served[0], wait_until="domcontentloaded", timeout=30_000)
            box = page.locator("#classes input")
            box.click()
            box.fill("7")
            page.keyboard.press("Enter")
            page.keyboard.press("Escape")
            page.locator("#generate").click()
            # 4 images per class (the slider's default) x classes 0 and 7
            page.wait_for_function("document.querySelectorAll('#gallery img').length >= 8", timeout=30_000)
            page.locator("#info").get_by_text("NFE").wait_for(timeout=10_000)
            page.screenshot(path=str(ARTIFACTS / "demo.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / "demo.png").stat().st_size > 0


def test_command_line_quotes_and_falls_back_to_ids():
    from types import SimpleNamespace

    from genlab.demo import sample_command
    from genlab.generators.objectives.flow import FlowSampleOptions

    sample = FlowSampleOptions()
    pipe = SimpleNamespace(
        class_names=["a,b", "Food & Drink", "7"], cfg=SimpleNamespace(sample=SimpleNamespace(options=sample))
    )
    run = SimpleNamespace(path=Path("runs/my run"), pipe=pipe, has_sampler=True)
    argv = shlex.split(sample_command(run, ["Food & Drink"], 2, "euler", 8, 3.0, 5, None))
    assert argv[argv.index("--run") + 1] == "runs/my run" and argv[argv.index("--classes") + 1] == "Food & Drink"
    assert "--guidance-interval" not in argv
    argv = shlex.split(sample_command(run, ["a,b", "7"], 2, "euler", 8, 3.0, 5, (0.1, 0.9)))
    assert argv[argv.index("--classes") + 1] == "0,2" and argv[argv.index("--guidance-interval") + 1] == "0.1,0.9"
    sample.cfg_interval = (0.0, 0.875)  # a run whose default interval is not [0, 1] (LightningDiT's)
    assert "--guidance-interval" not in sample_command(run, ["7"], 2, "euler", 8, 3.0, 5, (0.0, 0.875))
    argv = shlex.split(sample_command(run, ["7"], 2, "euler", 8, 3.0, 5, (0.0, 1.0)))
    assert argv[argv.index("--guidance-interval") + 1] == "0.0,1.0"
