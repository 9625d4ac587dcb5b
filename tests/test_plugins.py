"""Components from outside genlab: a plugin package registers a task, a sampler, an importer and a benchmark through
the ``genlab.plugins`` entry-point group (or GENLAB_PLUGINS), and the CLI drives them with no genlab file edited."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "tests" / "fixtures" / "plugin" / "toyplug.py"


def genlab(*argv, site: Path, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    paths = os.pathsep.join([str(site), str(ROOT)])
    inherited = {k: v for k, v in os.environ.items() if k != "GENLAB_PLUGINS"}  # only what the test names
    full = {**inherited, "PYTHONPATH": paths, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "genlab", *argv], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A folder on PYTHONPATH holding the plugin module and the dist-info an installed package would have."""
    site = tmp_path_factory.mktemp("site")
    shutil.copy(PLUGIN, site / "toyplug.py")
    info = site / "toyplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toyplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[genlab.plugins]\ntoyplug = toyplug\n")
    return site


def test_list_shows_where_each_name_came_from(site, tmp_path):
    r = genlab("info", "--list", site=site, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = {line.split(":")[0]: line for line in r.stdout.splitlines()}
    for kind, name in (("tasks", "toy-random"), ("samplers", "toy-midpoint"), ("importers", "toy-json"),
                       ("benchmarks", "toy-sum")):  # fmt: skip
        assert f"{name} [plugin toyplug]" in lines[kind], lines[kind]
    assert "generator," in lines["tasks"] and "[" not in lines["generators"]  # genlab's own are unmarked
    assert "toyplug (entry point toyplug)" in lines["plugins"]


def test_a_plugin_is_trained_sampled_imported_and_benchmarked(site, tmp_path):
    (tmp_path / "toy.yaml").write_text("task: toy-random\nseed: 3\n")
    r = genlab("train", "--preset", "toy.yaml", "--out", "runs/toy", site=site, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "runs/toy/toy/config.json").read_text()) == {"base": "smoke"}
    r = genlab("sample", "--run", "runs/toy", "--sampler", "toy-midpoint", "--steps", "2", "--classes", "0,1",
               "--n", "1", "--out", "toy.png", site=site, cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "2 images, 4 NFE" in r.stdout and (tmp_path / "toy.png").stat().st_size > 0  # 2 steps x 2 evaluations
    (tmp_path / "seed.json").write_text('{"seed": 5}')
    r = genlab("import", "toy-json", "seed.json", "--out", "runs/imported", site=site, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "seed: 5" in (tmp_path / "runs/imported/config.yaml").read_text()
    r = genlab("bench", "toy-sum", "--n", "5", "--json", site=site, cwd=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout) == {"n": 5, "sum": 10}, r.stderr
    r = genlab("bench", "toy-sum", "--n", "5", site=site, cwd=tmp_path)
    assert r.stdout.strip() == "toy-sum: 10"


def test_genlab_plugins_names_modules_and_a_broken_one_is_one_line(tmp_path):
    bare = tmp_path / "bare"  # the module alone, no dist-info: only GENLAB_PLUGINS brings it
    bare.mkdir()
    shutil.copy(PLUGIN, bare / "toyplug.py")
    r = genlab("bench", "toy-sum", "--n", "3", "--json", site=bare, cwd=tmp_path, env={"GENLAB_PLUGINS": "toyplug"})
    assert r.returncode == 0 and json.loads(r.stdout)["sum"] == 3, r.stderr
    r = genlab("bench", "toy-sum", site=bare, cwd=tmp_path)
    assert r.returncode == 2 and "invalid choice: 'toy-sum'" in r.stderr  # not named: not loaded
    (bare / "broken_plugin.py").write_text("raise RuntimeError('this plugin is broken')\n")
    r = genlab("info", "--list", site=bare, cwd=tmp_path, env={"GENLAB_PLUGINS": "toyplug, broken_plugin"})
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "genlab: error: plugin broken_plugin (GENLAB_PLUGINS) failed to import: RuntimeError: this plugin is broken"
    ]
