"""Issue 27: ``--overwrite`` removes only what a genlab run manifest lists as genlab's, refuses a folder without
one, and says what it removed."""

import json

import pytest

from genlab.cli import main
from genlab.runs.store import MANIFEST, RunFolder
from genlab.train import TrainError
from genlab.train.runfolder_guard import clear_run_outputs


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def genlab_run(path):
    run = RunFolder(path)
    run.write_config({"data": {"name": "digits"}})
    run.write_class_names(["a", "b"])
    run.write_component("generator", {"generator": {"name": "dit"}}, {})
    (path / "checkpoints" / "step_0000010").mkdir(parents=True)
    (path / "checkpoints" / "step_0000010" / "model.safetensors").write_bytes(b"x")
    (path / "samples").mkdir()
    (path / "samples" / "step_0000010.png").write_bytes(b"png")
    return path


def test_a_folder_that_never_held_a_genlab_run_is_refused_and_kept(tmp_path, capsys):
    out = tmp_path / "mine"
    (out / "samples").mkdir(parents=True)
    (out / "config.yaml").write_text("my: own settings\n")
    (out / "samples" / "holiday.png").write_bytes(b"\x89PNG holiday")
    before = snapshot(out)
    code = main(["train", "--preset", "smoke", "--overwrite", "--out", str(out), "train.steps=1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and f"no genlab run manifest ({MANIFEST})" in err, err
    assert snapshot(out) == before


def test_only_the_names_of_the_manifest_go_and_the_users_files_stay(tmp_path):
    out = genlab_run(tmp_path / "run")
    (out / "generator" / "notes.txt").write_text("mine")
    (out / "samples" / "holiday.png").write_bytes(b"mine")
    (out / "checkpoints" / "README").write_text("mine")
    removed = clear_run_outputs(out)
    assert removed == ["config.yaml", "checkpoints", "generator", "samples", "class_names.json"]
    assert sorted(snapshot(out)) == ["checkpoints/README", "generator/notes.txt", "samples/holiday.png"]


def test_a_crafted_manifest_cannot_widen_what_is_deleted(tmp_path):
    out = genlab_run(tmp_path / "run")
    (out / "mine.txt").write_text("mine")
    (tmp_path / "outside.txt").write_text("outside")
    (out / MANIFEST).write_text(json.dumps({"genlab_run": 1, "own": ["*", "**", "../outside.txt", "mine.txt"]}))
    assert clear_run_outputs(out) == []  # no listed name is one of genlab's
    assert (out / "mine.txt").is_file() and (tmp_path / "outside.txt").is_file() and (out / "config.yaml").is_file()
    (out / MANIFEST).write_text("[not a manifest")
    with pytest.raises(TrainError, match="no genlab run manifest"):
        clear_run_outputs(out)


def test_a_link_is_removed_not_what_it_points_to(tmp_path):
    out = genlab_run(tmp_path / "run")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious").write_text("keep")
    (out / "checkpoints" / "step_0000020").symlink_to(elsewhere, target_is_directory=True)
    clear_run_outputs(out)
    assert (elsewhere / "precious").read_text() == "keep" and not (out / "checkpoints" / "step_0000020").exists()


def test_overwrite_says_what_it_removed(tmp_path, capsys):
    out = genlab_run(tmp_path / "run")
    (out / "generator" / "notes.txt").write_text("mine")
    argv = ["train", "--preset", "smoke", "--overwrite", "--out", str(out), "train.steps=1", "sample.per_class=1"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "--overwrite: deleted config.yaml, checkpoints, generator, samples, class_names.json" in err, err
    assert (out / "generator" / "notes.txt").read_text() == "mine" and (
        out / "generator" / "model.safetensors"
    ).is_file()
