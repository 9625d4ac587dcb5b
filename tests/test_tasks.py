"""Tasks own their runs: Pipeline.load asks the run's task; teacher runs; train.init_from; reading a run once."""

import hashlib
import shutil

import pytest
import yaml

from genlab import config
from genlab.cli import main
from genlab.config import ConfigError
from genlab.pipeline import Pipeline, RunError
from genlab.tasks import train_run
from genlab.tasks.teacher import TeacherConfig, load_teacher


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_pipeline_load_asks_the_runs_task(tmp_path, monkeypatch):
    from genlab import registry

    calls = []

    class Toy:
        Config = dict

        @staticmethod
        def load(run, *, device=None):
            calls.append((run.path, device))
            return "a pipeline"

    monkeypatch.setitem(registry._ENTRIES["task"], "toy-task", Toy)
    (tmp_path / "config.yaml").write_text("task: toy-task\n")
    assert Pipeline.load(tmp_path, device="cpu") == "a pipeline" and calls == [(tmp_path, "cpu")]
    (tmp_path / "config.yaml").write_text("task: nothing-registered\n")
    with pytest.raises(RunError, match="unknown task 'nothing-registered'"):
        Pipeline.load(tmp_path)


def test_a_tokenizer_run_has_nothing_to_sample(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"task": "tokenizer"}))
    code = main(["sample", "--run", str(tmp_path), "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines() == [
        f"genlab sample: error: {tmp_path} is a tokenizer run: it has no generator to sample (train one on it)"
    ]


# ----------------------------------------------------------------------------- teacher runs


def test_load_teacher_is_frozen_and_records_path_and_sha256(smoke_run):
    t = load_teacher(TeacherConfig(run=str(smoke_run)))
    assert t.path == smoke_run.resolve() and t.sha256 == sha256(smoke_run / "generator" / "model.safetensors")
    assert not t.pipeline.training and not any(p.requires_grad for p in t.pipeline.parameters())
    assert t.record() == {"run": str(smoke_run.resolve()), "sha256": t.sha256}
    t.check_fits(t.tokenizer.token_spec, len(t.pipeline.class_names))
    with pytest.raises(ConfigError, match="classes"):
        t.check_fits(t.tokenizer.token_spec, 3)
    other = type(t.tokenizer.token_spec)(kind="discrete", shape=(4, 4), vocab_size=16)
    with pytest.raises(ConfigError, match="makes tokens"):
        t.check_fits(other, len(t.pipeline.class_names))
    pinned = load_teacher(TeacherConfig(run=str(smoke_run), sha256=t.sha256))
    assert pinned.sha256 == t.sha256


def test_a_teacher_that_fails_to_verify_is_refused(smoke_run, tmp_path):
    with pytest.raises(ConfigError, match="teacher.run: run directory .* does not exist"):
        load_teacher(TeacherConfig(run=str(tmp_path / "none")))
    t = load_teacher(TeacherConfig(run=str(smoke_run)))
    with pytest.raises(ConfigError, match="changed since this run recorded it"):
        load_teacher(TeacherConfig(run=str(smoke_run), sha256="0" * 64))
    bad = tmp_path / "bad"
    shutil.copytree(smoke_run, bad, ignore=shutil.ignore_patterns("checkpoints", "samples"))
    weights = bad / "generator" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    with pytest.raises(ConfigError, match=r"^teacher.run: .*model.safetensors") as e:
        load_teacher(TeacherConfig(run=str(bad)))
    assert "\n" not in str(e.value)
    (bad / "generator" / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="is missing"):
        load_teacher(TeacherConfig(run=str(bad), sha256=t.sha256))


@pytest.mark.parametrize("spelling", ["teacher.run", "base_run"])
def test_refiner_config_takes_teacher_run_or_its_alias_base_run(spelling):
    cfg = config.load("flowturbo-refiner", [f"{spelling}=runs/x"])
    assert cfg.teacher == TeacherConfig(run="runs/x")
    assert cfg.to_dict()["teacher"] == {"run": "runs/x"} and "base_run" not in cfg.to_dict()
    with pytest.raises(ConfigError, match="teacher: unknown key"):
        config.load("flowturbo-refiner", ["teacher.runn=runs/x"])


@pytest.fixture(scope="module")
def turbo_run(smoke_run, tmp_path_factory):
    """A FlowTurbo refiner run against the smoke run, named by ``teacher.run``, two steps."""
    out = tmp_path_factory.mktemp("runs") / "turbo"
    overrides = [f"teacher.run={smoke_run}", "train.steps=2", "train.batch_size=4", "train.checkpoint_every=0",
                 "train.sample_every=0", "refiner.hidden_size=16", "refiner.num_heads=2"]  # fmt: skip
    train_run(config.load("flowturbo-refiner", overrides), out)
    return out


def test_refiner_run_records_its_teacher(smoke_run, turbo_run):
    out = turbo_run
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["teacher"] == {"run": str(smoke_run.resolve()),
                                "sha256": sha256(smoke_run / "generator" / "model.safetensors")}  # fmt: skip
    pipe = Pipeline.load(out)
    assert "refiner" in pipe.generator.helpers


# ----------------------------------------------------------------------------- train.init_from


def test_init_from_loads_another_runs_weights_strictly(smoke_run, tmp_path):
    from safetensors.torch import load_file

    from genlab.tasks.base import init_from

    cfg = config.load("smoke", [f"train.init_from={smoke_run}"])
    pipe = Pipeline.from_config(cfg)
    init_from(cfg.train, {"generator": pipe.weights})
    saved = load_file(str(smoke_run / "generator" / "model.safetensors"))
    assert all(v.equal(saved[k]) for k, v in pipe.weights.state_dict().items())
    cfg.train.init_from = f"{smoke_run}:tokenizer"
    with pytest.raises(ConfigError, match="starts its generator from another run, not a tokenizer"):
        init_from(cfg.train, {"generator": pipe.weights})
    tok = config.load("smoke").tokenizer.build(resolution=16)
    init_from(cfg.train, {"tokenizer": tok})  # a generator run's tokenizer into a tokenizer task
    wide = Pipeline.from_config(config.load("smoke", ["generator.hidden_size=48"]))
    cfg.train.init_from = str(smoke_run)
    with pytest.raises(ConfigError, match=r"^train.init_from: .*generator/model.safetensors does not fit") as e:
        init_from(cfg.train, {"generator": wide.weights})
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("spec", "message"),
    [("{tmp}/none", "run directory {tmp}/none does not exist"),
     ("{tmp}", "has no generator"),
     ("{run}", "does not fit")],
)  # fmt: skip
def test_init_from_errors_are_one_line(smoke_run, tmp_path, capsys, spec, message):
    spec, message = (s.format(tmp=tmp_path, run=smoke_run) for s in (spec, message))
    argv = ["train", "--preset", "smoke", "--out", str(tmp_path / "b"), f"train.init_from={spec}", "train.steps=1"]
    if spec == str(smoke_run):
        argv.append("generator.depth=3")
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


# ----------------------------------------------------------------------------- reading a run once


def test_each_config_yaml_is_parsed_once_per_command(smoke_run, turbo_run, tmp_path, monkeypatch):
    from genlab.runs.store import RunFolder

    parsed = []
    real = RunFolder._parse_config
    monkeypatch.setattr(RunFolder, "_parse_config", lambda self: parsed.append(self.path.resolve()) or real(self))
    png = str(tmp_path / "s.png")
    cases = [
        (["sample", "--run", str(smoke_run), "--n", "1", "--steps", "2", "--out", png], [smoke_run]),
        (["info", "--run", str(smoke_run)], [smoke_run]),
        (["sample", "--run", str(turbo_run), "--n", "1", "--sampler", "flowturbo", "--steps", "4", "--out", png],
         [turbo_run, smoke_run]),
        (["sample", "--run", str(smoke_run), "--refiner", str(turbo_run), "--n", "1", "--sampler", "flowturbo",
          "--steps", "4", "--out", png], [smoke_run]),
    ]  # fmt: skip
    for argv, expected in cases:
        parsed.clear()
        assert main(argv) == 0, argv
        assert sorted(parsed) == sorted(p.resolve() for p in expected), argv


def test_the_run_folder_guard_runs_once_per_train(tmp_path, monkeypatch):
    from genlab.runs.store import RunFolder
    from genlab.train import runfolder_guard

    calls, parsed = [], []
    real_guard, real_parse = runfolder_guard.check_run_folder, RunFolder._parse_config
    monkeypatch.setattr(runfolder_guard, "check_run_folder", lambda *a, **k: calls.append(a[0]) or real_guard(*a, **k))
    monkeypatch.setattr(RunFolder, "_parse_config", lambda self: parsed.append(self.path) or real_parse(self))
    out = tmp_path / "r"
    argv = ["train", "--preset", "smoke", "--out", str(out), "train.steps=1", "train.batch_size=4",
            "sample.per_class=1"]  # fmt: skip
    for extra in ([], ["--overwrite"], ["--resume", "auto"]):
        calls.clear(), parsed.clear()
        assert main(argv + extra) == 0, extra
        assert calls == [out], extra
        assert parsed == ([] if extra == ["--overwrite"] else [out] if extra else []), extra
