"""The demo refuses a huge upload from its header, says one line per refused request, and SIGTERM cleans up."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

gr = pytest.importorskip("gradio", reason="the demo extra (gradio) is not installed")

from genlab.demo import _read_upload, _refused  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_a_huge_upload_is_refused_before_it_is_decoded(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("L", (300, 200)).save(path)  # tiny on disk, 60,000 pixels declared in its header

    def no_decoding(self, *a, **k):
        raise AssertionError("the pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(gr.Error, match="300×200; at most 10,000 pixels"):
        _read_upload(path, 10_000)


def test_an_upload_within_the_limit_is_read(tmp_path):
    path = tmp_path / "ok.png"
    Image.fromarray(np.full((4, 6, 3), 7, np.uint8)).save(path)
    arr = _read_upload(path, 10_000)
    assert arr.shape == (4, 6, 3) and arr.dtype == np.uint8 and (arr == 7).all()


@pytest.mark.parametrize("data", [b"", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, b"not an image"])
def test_a_broken_upload_is_one_message(tmp_path, data):
    path = tmp_path / "x.png"
    path.write_bytes(data)
    with pytest.raises(gr.Error, match="not an image this demo can read"):
        _read_upload(path, 10_000)


def test_a_refused_request_is_one_console_line_and_no_traceback(capsys):
    err = _refused("choose at least one class")
    assert isinstance(err, gr.Error) and err.print_exception is False
    assert capsys.readouterr().err == "genlab demo: refused a request: choose at least one class\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_sigterm_removes_the_demos_temporary_folder(smoke_run, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp), "GRADIO_ANALYTICS_ENABLED": "False",
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    cmd = [sys.executable, "-m", "genlab", "demo", "--run", str(smoke_run), "--port", str(free_port())]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while not list(tmp.glob("genlab-demo-*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert list(tmp.glob("genlab-demo-*")), "the demo did not start"
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert not list(tmp.glob("genlab-demo-*")), out[-2000:]
    assert "Traceback" not in out, out[-2000:]
