"""Every command in the README's bash code blocks runs, as a tiny run of itself (issue 15).

The commands are read from README.md (```bash blocks; ``\\`` continuations joined, comments dropped, ``&&``
split), so a command added to the README is picked up with no change here. Each one is either

- run, if it is a ``genlab`` command: in README order, in-process (``genlab.cli.main``), all in one temporary
  folder, so the run one command writes is there for the next one; it must exit with status 0; or
- skipped, with the reason given by the first entry of ``SKIP`` that matches it (data or hardware CI lacks, a
  server that runs until stopped, the install and ``make`` steps that ``.ci/run`` runs in a clean clone).

A command that is neither fails ``test_every_readme_command_is_run_or_skipped_for_a_reason``.

The substitutions that make the runs tiny (``tiny()``), the same for every command:

- ``runs/quickstart`` (what ``make quickstart`` writes) is a smoke run (16x16 digits, 40 steps) trained first,
  and ``runs/quickstart-NAME`` (what ``make quickstart-NAME`` writes) the preset ``smoke-NAME``, trained when a
  command first needs it (a new family's README commands need only its smoke preset);
- presets: ``PRESETS`` (``quickstart`` -> ``smoke``, ``quickstart-vae`` -> ``smoke-vae``);
- ``genlab train`` gets ``TINY_TRAIN`` (2 steps) after the command's own overrides (the later ones win), except
  with ``--resume``, which resumes a run as it was trained;
- datasets: ``--dataset openmoji --resolution 32`` -> ``digits`` at 16 px (the smoke runs' data);
- sizes: ``genlab sample --n`` (per class) -> 1, ``genlab eval --n`` -> 8 images, ``--steps`` at most 2,
  ``eval ref`` -> its first 8 images, written to ``stats.npz`` (the statistics file the README's later examples
  read), and ``eval --run`` without ``--ref`` compares with those; ``bench sample`` -> 8 images at 4 NFE, no FID,
  ``bench train`` -> 1 s, other benchmarks -> 8 images;
- paths that no earlier README command writes: ``PATHS`` (to ones that an earlier command wrote), and
  ``PREPARE`` (made by the test: a folder of images for ``--images other_repo/samples/``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PRESET_DIR = ROOT / "genlab" / "presets"

# (regex searched in the command, why it is not run here)
SKIP = [
    (r"^make\b", "a make target: CI runs `make test`, and `make quickstart` in a fresh clone (.ci/run)"),
    (r"^(python[\d.]* -m venv|\. \.venv/bin/activate|pip install)", "an install step: .ci/run installs a fresh .venv"),
    (r"^accelerate launch", "needs many GPUs and ImageNet"),
    (r"=/data/|=/models/", "needs ImageNet or pretrained weights at local paths CI lacks"),
    (r"VIRTUAL_imagenet", "needs ADM's ImageNet reference batch"),
    (r"^genlab demo|^python -m apps\.demo", "a web server that runs until stopped; tests/test_demo.py starts the app"),
    (r"^genlab bench zoo", "trains every family's OpenMoji recipe (an hour); tests/test_zoo.py runs its --tiny mode"),
]
PRESETS = {"quickstart": "smoke", "quickstart-vae": "smoke-vae"}
PATHS = {"runs/vae": "runs/smoke-vae", "caches/digits": "caches/openmoji-vae"}
TINY_TRAIN = ["train.steps=2", "train.checkpoint_every=0", "train.sample_every=0", "train.tensorboard=false"]
TINY_DATA = {"openmoji": "digits"}
TINY_RESOLUTION = {"32": "16"}


def readme_commands(text: str) -> list[list[str]]:
    """Each command of the README's bash blocks as argv."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            argv: list[str] = []
            for token in shlex.split(line, comments=True) + ["&&"]:
                if token == "&&":
                    if argv:
                        commands.append(argv)
                    argv = []
                else:
                    argv.append(token)
    return commands


def skip_reason(argv: list[str]) -> str | None:
    line = shlex.join(argv)
    return next((why for pattern, why in SKIP if re.search(pattern, line)), None)


def _set(argv: list[str], flag: str, value: str) -> list[str]:
    """``flag value`` in argv, replaced or appended."""
    if flag in argv:
        i = argv.index(flag)
        return [*argv[: i + 1], value, *argv[i + 2 :]]
    return [*argv, flag, value]


def tiny(argv: list[str], class_names: list[str]) -> list[str]:
    """The genlab arguments (without ``genlab``) of the tiny run of a README command."""
    args = [PATHS.get(a, a) for a in argv[1:]]
    args = [re.sub(r"=(runs|caches)/[\w.-]+", lambda m: "=" + PATHS.get(m.group(0)[1:], m.group(0)[1:]), a)
            for a in args]  # fmt: skip
    cmd = args[0]
    if "--preset" in args:
        preset = args[args.index("--preset") + 1]
        args = _set(args, "--preset", PRESETS.get(preset, preset))
    if "--dataset" in args:
        args = _set(
            args, "--dataset", TINY_DATA.get(args[args.index("--dataset") + 1], args[args.index("--dataset") + 1])
        )
    if "--resolution" in args:
        res = args[args.index("--resolution") + 1]
        args = _set(args, "--resolution", TINY_RESOLUTION.get(res, res))
    if "--steps" in args:
        args = _set(args, "--steps", str(min(2, int(args[args.index("--steps") + 1]))))
    if cmd == "train" and "--resume" not in args:  # after the command's own overrides, so that ours win
        last = max([i for i, a in enumerate(args) if "=" in a and not a.startswith("-")], default=None)
        at = last + 1 if last is not None else args.index("--preset") + 2 if "--preset" in args else 1
        args = [*args[:at], *TINY_TRAIN, *args[at:]]
    if cmd == "sample":
        args = _set(args, "--n", "1")
        if "--classes" in args and args[args.index("--classes") + 1] != "all":
            n = len(args[args.index("--classes") + 1].split(","))
            args = _set(args, "--classes", ",".join(class_names[:n]))
    if cmd == "eval":
        if args[1:2] == ["ref"]:
            args = _set(_set(args, "--n", "8"), "--out", "stats.npz")
        else:
            args = _set(_set(args, "--n", "8"), "--batch-size", "8")
            if "--run" in args and "--ref" not in args:
                args = _set(args, "--ref", "stats.npz")
    if cmd == "bench" and args[1:2] == ["sample"]:
        args = _set(_set(_set(args, "--n", "8"), "--nfe", "4"), "--max-batch", "0") + ["--no-fid"]
    elif cmd == "bench" and args[1:2] == ["train"]:
        args = _set(args, "--seconds", "1")
    elif cmd == "bench":
        args = _set(args, "--n", "8")
    return args


def _images_folder(path: Path) -> None:
    """``--images other_repo/samples/``: PNGs of the 16x16 images an earlier command sampled to batch.npz."""
    import numpy as np
    from PIL import Image

    path.mkdir(parents=True, exist_ok=True)
    with np.load("batch.npz") as data:
        for i, image in enumerate(data["arr_0"][:8]):
            Image.fromarray(image).save(path / f"{i:03d}.png")


PREPARE = {"other_repo/samples/": _images_folder}


def _load_inception_once(monkeypatch) -> None:
    """Each `genlab eval` loads the offline Inception (seconds); in this one process, load it once."""
    evals = pytest.importorskip("genlab.evals")
    loaded = {}
    resolve = evals.resolve

    def once(path=None, *, device="cpu"):
        key = (path, str(device))
        if key not in loaded:
            loaded[key] = resolve(path, device=device)
        return loaded[key]

    monkeypatch.setattr(evals, "resolve", once)


def test_every_readme_command_is_run_or_skipped_for_a_reason():
    commands = readme_commands(README.read_text())
    assert len(commands) > 20  # the parser found the README's examples
    unknown = [shlex.join(c) for c in commands if c[0] != "genlab" and skip_reason(c) is None]
    assert not unknown, (
        f"README commands this test neither runs nor skips (add a SKIP entry with the reason): {unknown}"
    )


@pytest.mark.slow
def test_readme_commands_run(tmp_path, monkeypatch, capsys):
    from genlab.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GENLAB_EVAL_CACHE", str(tmp_path / "eval-cache"))
    _load_inception_once(monkeypatch)
    monkeypatch.setenv("OMP_WAIT_POLICY", os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))  # main() sets it; undo after
    assert main(["train", "--preset", "smoke", "--out", "runs/quickstart"]) == 0  # stands for `make quickstart`
    class_names = json.loads(Path("runs/quickstart/class_names.json").read_text())
    presets = {p.relative_to(PRESET_DIR).with_suffix("").as_posix() for p in PRESET_DIR.rglob("*.yaml")}
    ran, skipped, failed = [], [], []
    for argv in readme_commands(README.read_text()):
        line = shlex.join(argv)
        if argv[0] != "genlab" or skip_reason(argv):
            skipped.append(f"{line}  [{skip_reason(argv)}]")
            continue
        args = tiny(argv, class_names)
        for arg in args:  # a run that `make quickstart-NAME` writes: the preset smoke-NAME stands for it
            m = re.fullmatch(r"runs/quickstart-([\w-]+)", arg)
            if m and not Path(arg).exists() and f"smoke-{m.group(1)}" in presets:
                assert main(["train", "--preset", f"smoke-{m.group(1)}", "--out", arg]) == 0, arg
        for arg, prepare in PREPARE.items():
            if arg in args and not Path(arg).exists():
                prepare(Path(arg))
        t0 = time.perf_counter()
        capsys.readouterr()
        try:
            code = main(args)
        except BaseException as e:  # noqa: BLE001  (report every failing command, not only the first)
            code = f"{type(e).__name__}: {e}"
        err = capsys.readouterr().err.strip().splitlines()
        if code != 0:
            failed.append(f"{line}\n    ran as: genlab {shlex.join(args)}\n    -> {code}: {' | '.join(err[-3:])}")
        ran.append(f"{time.perf_counter() - t0:5.1f}s  genlab {shlex.join(args)}")
    with capsys.disabled():
        print(f"\nREADME commands run ({len(ran)}):\n  " + "\n  ".join(ran))
        print(f"README commands skipped ({len(skipped)}):\n  " + "\n  ".join(skipped))
    assert not failed, "README commands that failed:\n" + "\n".join(failed)
