"""TokenSpec's axes as data: the kinds of round 2 keep their meaning, saved form and describe(); new layouts
(a 1-D sequence of vectors, a time axis) are specs, refused by generators that do not declare them."""

import json

import pytest

from genlab import registry
from genlab.generators.base import GeneratorError, check_spec
from genlab.pipeline import spec_from_dict, spec_to_dict
from genlab.runs.store import RunError
from genlab.tokenizers.base import TokenSpec

# generator/config.json's token_spec as main 1e17ee8 writes it (dataclasses.asdict, no axes), with its describe()
# and num_positions
MAIN = [
    ('{"kind": "continuous", "shape": [4, 8, 8], "vocab_size": 0, "scales": [], "variable_length": false, '
     '"code_dim": 0, "stochastic_decoder": false}', "continuous 4x8x8 latent", 64, ("channel", "height", "width")),
    ('{"kind": "discrete", "shape": [16, 16], "vocab_size": 4096, "scales": [], "variable_length": false, '
     '"code_dim": 8, "stochastic_decoder": false}', "discrete 16x16 grid, vocab 4096", 256, ("height", "width")),
    ('{"kind": "discrete", "shape": [32], "vocab_size": 4096, "scales": [], "variable_length": true, '
     '"code_dim": 0, "stochastic_decoder": true}', "discrete 32-token sequence, vocab 4096", 32, ("sequence",)),
    ('{"kind": "residual", "shape": [8, 8, 4], "vocab_size": 16384, "scales": [], "variable_length": false, '
     '"code_dim": 256, "stochastic_decoder": false}', "residual 8x8 grid x depth 4, vocab 16384", 64,
     ("height", "width", "depth")),
    ('{"kind": "multiscale", "shape": [4, 4], "vocab_size": 64, "scales": [1, 2, 4], "variable_length": false, '
     '"code_dim": 8, "stochastic_decoder": false}', "multiscale scales 1,2,4, vocab 64", 21, ("height", "width")),
]  # fmt: skip


@pytest.mark.parametrize("saved, described, positions, axes", MAIN)
def test_main_saved_specs_load_and_keep_their_meaning_and_saved_form(saved, described, positions, axes):
    data = json.loads(saved)
    spec = spec_from_dict(data)
    assert spec.axes == axes and spec.classic
    assert spec.describe() == described and spec.num_positions == positions
    assert json.loads(json.dumps(spec_to_dict(spec))) == data  # written back exactly as main wrote it
    assert spec == TokenSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def test_new_layouts_are_specs():
    seq = TokenSpec("continuous", (32, 16), axes=("sequence", "channel"))  # TiTok-KL / ViTok
    assert seq.channels == 16 and seq.grid is None and seq.num_positions == 32 and seq.size("sequence") == 32
    assert seq.describe() == "continuous 32 sequence x 16 channel" and not seq.classic
    video = TokenSpec("continuous", (4, 5, 8, 8), axes=("channel", "time", "height", "width"))
    assert video.channels == 4 and video.grid == (8, 8) and video.num_positions == 5 * 64 and video.size("time") == 5
    ids = TokenSpec("discrete", (3, 4, 4), vocab_size=10)  # rank 3: the kind's only rank-3 layout
    assert ids.axes == ("time", "height", "width") and ids.num_positions == 48 and ids.describe().endswith("vocab 10")
    flex = TokenSpec("continuous", (8, 6), axes=("sequence", "channel"), variable_length=True)
    for spec in (seq, video, ids, flex):
        assert "axes" in spec_to_dict(spec) and spec_from_dict(json.loads(json.dumps(spec_to_dict(spec)))) == spec


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kind="continuous", shape=(4, 8, 8), axes=("height", "width", "channel")), "have axes"),
        (dict(kind="continuous", shape=(4, 8), axes=("sequence", "channel", "time")), "have axes"),
        (dict(kind="discrete", shape=(2, 3, 4, 5), vocab_size=4), "rank"),
        (dict(kind="discrete", shape=(8, 8), vocab_size=4, variable_length=True), "sequence axis"),
        (dict(kind="multiscale", shape=(4, 4), vocab_size=4, scales=(1, 2, 4), axes=("sequence",)), "have axes"),
        (dict(kind="pixels", shape=(3,)), "unknown token kind"),
    ],
)
def test_bad_axes_are_one_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TokenSpec(**kwargs)


def test_a_malformed_saved_axes_is_a_run_error():
    with pytest.raises(RunError, match="malformed"):
        spec_from_dict({"kind": "continuous", "shape": [4, 8, 8], "axes": ["time", "height", "width"]})


def test_generators_refuse_layouts_they_do_not_declare():
    dit = registry.get("generator", "dit")
    check_spec(dit, TokenSpec("continuous", (4, 8, 8)))
    with pytest.raises(GeneratorError, match=r"does not model continuous tokens with axes \(sequence, channel\)"):
        check_spec(dit, TokenSpec("continuous", (32, 16), axes=("sequence", "channel")))

    class Seq:
        TOKEN_KINDS, TOKEN_AXES = ("continuous",), (("sequence", "channel"),)

    check_spec(Seq, TokenSpec("continuous", (32, 16), axes=("sequence", "channel")))
