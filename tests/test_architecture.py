"""The shape of the code: imports point one way, from the command line down, with no cycles."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "digitcmp"

# A module may import modules of its own layer or of layers below it, never above. Modules of
# one layer may import each other as long as there is no cycle (checked separately).
LAYERS = [
    ["errors", "messages", "version", "seeds"],
    ["config", "files", "provenance", "stats"],
    ["data", "data.idx", "data.sources", "data.pairs", "device", "plugins", "kernels", "fused", "directconv",
     "adam"],
    ["models", "models.registry", "models.study", "models.probcmp", "models.layers"],
    ["stacked", "train", "checkpoint", "study", "tables"],
    ["rundir", "executors", "progress", "predict", "plots", "ablation", "sweep"],
    ["experiment", "report"],
    ["commands"],
    ["cli", "__main__", ""],
]
RANK = {m: i for i, layer in enumerate(LAYERS) for m in layer}


def modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        parts = p.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def imports() -> dict[str, set[str]]:
    """Module -> the digitcmp modules it imports anywhere (also inside functions)."""
    mods = modules()
    edges = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - node.level + 1] + ([node.module] if node.module else [])
                target = ".".join(p for p in base if p)
                for alias in node.names:
                    sub = f"{target}.{alias.name}" if target else alias.name
                    found.add(sub if sub in mods else target)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("digitcmp"):
                found.add(node.module.removeprefix("digitcmp").lstrip("."))
        edges[name] = {m for m in found if m in mods and m != name}
    return edges


def test_every_module_has_a_layer():
    assert sorted(set(modules()) - set(RANK)) == []


def test_imports_point_down():
    upward = [f"{a} imports {b}" for a, bs in imports().items() for b in bs if RANK[b] > RANK[a]]
    assert upward == []


def test_no_import_cycles():
    edges = imports()
    state: dict[str, int] = {}

    def visit(m, path):
        if state.get(m) == 1:
            pytest.fail("import cycle: " + " -> ".join(path[path.index(m):] + [m]))
        if state.get(m) == 2:
            return
        state[m] = 1
        for n in sorted(edges[m]):
            visit(n, path + [m])
        state[m] = 2

    for m in edges:
        visit(m, [])
