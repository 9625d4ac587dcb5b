"""The import direction of ARCHITECTURE.md/STYLE.md, checked on the source."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "genlab"

# layer -> the genlab layers it may import
ALLOWED = {
    "registry": set(),
    "config": {"registry"},
    "nn": {"registry", "config", "nn"},
    "data": {"registry", "config", "data"},
    "tokenizers": {"registry", "config", "nn", "samplers", "tokenizers"},  # samplers: FlexTok's flow decoder
    "samplers": {"registry", "config", "samplers"},
    "generators": {"registry", "config", "nn", "samplers", "generators", "tokenizers.base"},
    "evals": {"registry", "config", "nn", "data", "evals"},
    "train": {"registry", "config", "nn", "data", "tokenizers.base", "train", "runs.store"},
    "runs": {"registry", "config", "runs"},
    "grids": {"data"},
    "pipeline": {"registry", "config", "nn", "data", "tokenizers", "generators", "samplers", "train", "runs", "grids",
                 "pipeline"},
    "tasks": {"registry", "config", "data", "tokenizers", "generators", "evals", "train", "runs", "grids", "pipeline",
              "tasks"},
    "imports": {"registry", "config", "nn", "tokenizers", "generators", "runs", "imports"},  # other codebases' files
    "threads": set(),
    "demo": {"registry", "config", "data", "tokenizers", "samplers", "runs", "pipeline", "demo"},
    "bench": {"registry", "config", "nn", "data", "tokenizers", "generators", "samplers", "train", "pipeline", "evals",
              "bench"},
}  # fmt: skip
# genlab.safeio (reading untrusted files: safetensors, JSON) sits below everything, beside the registry
ALLOWED["safeio"] = set()
ALLOWED["inputs"] = set()  # genlab.inputs: ranges of the command line's arguments (used by cli)
for _allowed in ALLOWED.values():
    _allowed.add("safeio")


def layer_of(module: str) -> str:
    parts = module.split(".")[1:]
    return parts[0] if parts else ""


def genlab_imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("genlab"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("genlab"):
            yield node.module


def test_import_direction():
    bad = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        layer = layer_of(".".join(rel.parts))
        if layer in ("cli", "__main__", "__init__", ""):
            continue
        allowed = ALLOWED[layer]
        for mod in genlab_imports(path):
            target = layer_of(mod)
            full = ".".join(mod.split(".")[1:3])
            if target and target not in allowed and full not in allowed:
                bad.append(f"{rel} imports {mod}")
    assert not bad, bad


def test_nothing_in_genlab_imports_apps():
    bad = []
    for path in PKG.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            bad += [f"{path.relative_to(PKG.parent)} imports {n}" for n in names if n.split(".")[0] == "apps"]
    assert not bad, bad


def test_no_top_level_tokenizers_package():
    assert not (PKG.parent / "tokenizers").exists()
