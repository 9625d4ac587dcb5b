import pytest

from genlab import config, registry
from genlab.config import ConfigError


def test_registry_lists_and_rejects_unknown_names():
    assert "dit" in registry.names("generator")
    assert "euler" in registry.names("sampler")
    with pytest.raises(registry.RegistryError, match="registered generators: .*dit"):
        registry.get("generator", "nope")
    with pytest.raises(registry.RegistryError, match="valid kinds"):
        registry.names("widget")


def test_registering_a_name_twice_is_an_error(monkeypatch):
    registry.load_builtins()
    monkeypatch.setattr(registry, "_ENTRIES", {k: dict(v) for k, v in registry._ENTRIES.items()})  # undone after
    registry.register("sampler", "test-dup")(lambda *a, **k: None)
    with pytest.raises(registry.RegistryError, match="already registered"):
        registry.register("sampler", "test-dup")(lambda *a, **k: None)


@pytest.mark.parametrize("name", config.list_presets())
def test_every_preset_resolves(name):
    cfg = config.load(name)
    again = type(cfg).from_dict(cfg.to_dict())  # round-trips through plain data
    assert again.to_dict() == cfg.to_dict()


def test_overrides_are_typed():
    cfg = config.load("smoke", ["train.steps=7", "train.lr=3e-4", "generator.depth=3", "train.tensorboard=false"])
    assert cfg.train.steps == 7 and isinstance(cfg.train.steps, int)
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.generator.cfg.depth == 3
    assert cfg.train.tensorboard is False


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown key generator\.dpeth; valid keys here: depth, hidden_size"):
        config.load("smoke", ["generator.dpeth=3"])
    with pytest.raises(ConfigError, match="unknown key train.stpes"):
        config.load("smoke", ["train.stpes=3"])


def test_wrong_type_is_an_error():
    with pytest.raises(ConfigError, match="train.steps: expected an integer, got 'ten'"):
        config.load("smoke", ["train.steps=ten"])
    with pytest.raises(ConfigError, match="objective.time_sampling: must be one of"):
        config.load("smoke", ["objective.time_sampling=gaussian"])


def test_invalid_values_and_forms():
    with pytest.raises(ConfigError, match="train.steps must be positive"):
        config.load("smoke", ["train.steps=0"])
    with pytest.raises(ConfigError, match="not of the form key=value"):
        config.load("smoke", ["train.steps"])
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        config.load("nope")
    with pytest.raises(ConfigError, match="generator.name: unknown generator 'unet'"):
        config.load("smoke", ["generator.name=unet"])


def test_preset_inheritance_and_paths(tmp_path):
    cfg = config.load("imagenet256/dit-xl-2")
    assert (cfg.generator.cfg.depth, cfg.generator.cfg.hidden_size, cfg.generator.cfg.patch_size) == (28, 1152, 2)
    assert cfg.train.batch_size == 256  # from the shared base
    path = tmp_path / "mine.yaml"
    path.write_text("base: smoke\ntrain:\n  steps: 3\n")
    assert config.load(str(path)).train.steps == 3


def test_training_grids_take_a_few_fixed_classes():
    from genlab.pipeline import grid_classes

    assert grid_classes(10) == list(range(10)) and grid_classes(10, 0) == list(range(10))
    assert grid_classes(1000, 8) == [0, 125, 250, 375, 500, 625, 750, 875]
    assert grid_classes(3, 8) == [0, 1, 2]
    cfg = config.load("imagenet256/var-d16")
    assert (cfg.sample.grid_classes, cfg.sample.per_class) == (8, 4)  # 32 images every 10k steps, not 50,000
    with pytest.raises(config.ConfigError, match="grid_classes"):
        config.load("smoke", ["sample.grid_classes=-1"])


def test_a_process_share_covers_the_items_once():
    from genlab.train import dist

    assert dist.world() == (0, 1) and dist.share(7) == range(0, 7)


def test_a_choice_spelled_like_a_yaml_boolean_is_that_choice():
    """``train.mixed_precision=no`` is the choice "no", not YAML 1.1's False."""
    assert config.load("smoke", ["train.mixed_precision=no"]).train.mixed_precision == "no"
    with pytest.raises(config.ConfigError, match="must be one of"):
        config.load("smoke", ["train.mixed_precision=yes"])
