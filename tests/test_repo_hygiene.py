"""The tracked tree works on any machine: no symlinks, no submodules, nothing that points outside the repository.

A committed ``.venv`` symlink into a CI cache folder once broke every fresh clone (issue 15)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs", "benchmarks/README.md")


def tracked() -> list[tuple[str, str]]:
    """(mode, path) of every file in git's index."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    proc = subprocess.run(["git", "ls-files", "-s", "-z"], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"not a git checkout: {proc.stderr.strip()}")
    entries = []
    for entry in proc.stdout.split("\0"):
        if entry:
            info, path = entry.split("\t", 1)  # "MODE SHA STAGE\tPATH"
            entries.append((info.split()[0], path))
    return entries


def test_no_symlinks_or_submodules_are_tracked():
    bad = [f"{path} (mode {mode})" for mode, path in tracked() if mode in ("120000", "160000")]
    assert not bad, f"symlinks/submodules in git's index (they break on other machines): {bad}"


def test_every_tracked_path_is_a_file_inside_the_repository():
    root = ROOT.resolve()
    outside = [p for _, p in tracked() if (ROOT / p).exists() and not (ROOT / p).resolve().is_relative_to(root)]
    assert not outside, f"tracked paths that resolve outside the repository: {outside}"


def _doc_files() -> list[Path]:
    files = []
    for name in DOCS:
        p = ROOT / name
        files += sorted(p.rglob("*.md")) if p.is_dir() else [p] if p.is_file() else []
    return files


# a markdown link target, or a path in backticks that starts with ../
LINK = re.compile(r"\]\(([^)\s]+)\)|`(\.\./[^`\s]*)`")


def test_docs_point_only_inside_the_repository():
    root = ROOT.resolve()
    bad = []
    for doc in _doc_files():
        for m in LINK.finditer(doc.read_text()):
            target = (m.group(1) or m.group(2)).split("#")[0]
            if not target or re.match(r"[a-z]+:", target):  # a URL, or an anchor in the same file
                continue
            if not (doc.parent / target).resolve().is_relative_to(root):
                bad.append(f"{doc.relative_to(ROOT)}: {target}")
    assert not bad, f"links that leave the repository (a clone has nothing there): {bad}"
