"""A token cache is checked before it is used: shard checksums, file entries, dtypes, sizes and counts."""

import json
import shutil

import pytest
import torch

from genlab.data.base import DataError, TensorImageDataset
from genlab.data.cache import TokenCacheDataset, write_token_cache


@pytest.fixture
def cache(tmp_path):
    g = torch.Generator().manual_seed(0)
    data = TensorImageDataset(torch.randint(0, 256, (20, 3, 4, 4), generator=g, dtype=torch.uint8),
                              torch.arange(20) % 2, ["a", "b"])  # fmt: skip
    meta = {"tokenizer": {"name": "pixels", "config": {}, "fingerprint": "x"}, "dataset": {"name": "random"},
            "resolution": 4, "token_spec": {"kind": "continuous", "shape": [3, 4, 4]}}  # fmt: skip
    write_token_cache(lambda x: x, data, tmp_path / "c", meta=meta, shard_size=8)
    return tmp_path / "c"


def read(path):
    return TokenCacheDataset(TokenCacheDataset.Config(path=str(path)))


def edit_manifest(path, fn):
    m = json.loads((path / "manifest.json").read_text())
    fn(m)
    (path / "manifest.json").write_text(json.dumps(m))


def test_a_good_cache_reads(cache):
    assert len(read(cache)) == 20


def test_a_changed_shard_fails_its_checksum(cache):
    shard = cache / "shard_00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF  # a token value: the header still parses
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match="shard_00001.safetensors: its checksum differs"):
        read(cache)


@pytest.mark.parametrize("entry", ["../outside.safetensors", "/etc/passwd", "sub/shard.safetensors", "..", "x.txt"])
def test_a_file_entry_outside_the_cache_is_refused(cache, tmp_path, entry):
    shutil.copy(cache / "shard_00000.safetensors", tmp_path / "outside.safetensors")
    edit_manifest(cache, lambda m: m["shards"][0].update(file=entry))
    with pytest.raises(DataError, match="not a .safetensors file inside"):
        read(cache)


def test_a_link_out_of_the_cache_is_refused(cache, tmp_path):
    target = tmp_path / "elsewhere.safetensors"
    shutil.move(cache / "shard_00000.safetensors", target)
    (cache / "shard_00000.safetensors").symlink_to(target)
    with pytest.raises(DataError, match="a link out of"):
        read(cache)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.update(count=10**18), "no valid count"),
        (lambda m: m.update(count=21), "add up to 20, the manifest says 21"),
        (lambda m: m["shards"][0].update(count=9), "add up to 21"),
        (lambda m: m.update(shards="x"), "no valid count and shard list"),
        (lambda m: m["shards"][0].pop("sha256"), "no valid count and sha256"),
        (lambda m: m.update(class_names=None), "no valid class_names"),
    ],
)
def test_a_crafted_manifest_is_one_data_error(cache, edit, message):
    edit_manifest(cache, edit)
    with pytest.raises(DataError, match=message):
        read(cache)


def test_a_manifest_that_is_not_json_is_one_data_error(cache):
    (cache / "manifest.json").write_bytes(b"\x80\x04\x95garbage")
    with pytest.raises(DataError, match="manifest.json: not a readable JSON file"):
        read(cache)


def _rewrite_header(shard, fn):
    raw = shard.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    fn(header)
    new = json.dumps(header, separators=(",", ":")).encode()
    new += b" " * (n - len(new)) if len(new) <= n else b""
    assert len(new) == n, "the test keeps the header's length"
    shard.write_bytes(raw[:8] + new + raw[8 + n :])


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda h: h["tokens"].update(dtype="U64"), "has dtype .U64."),
        (lambda h: h["tokens"].update(dtype="I64"), "takes .* bytes, its shape needs another size"),
        (lambda h: h["tokens"].update(shape=[7, 3, 4, 4]), "has 7 rows, the manifest says 8"),
        (lambda h: h.pop("label"), "no 'label' tensor"),
    ],
)
def test_a_crafted_shard_header_is_one_data_error(cache, edit, message):
    _rewrite_header(cache / "shard_00000.safetensors", edit)
    with pytest.raises(DataError, match=message):
        read(cache)


def test_a_truncated_shard_is_one_data_error(cache):
    shard = cache / "shard_00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(DataError, match="shard_00002.safetensors.*outside the file"):
        read(cache)
