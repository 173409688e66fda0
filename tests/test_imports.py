"""The package's import graph: no module-level import circle; the engine imports without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import realtime_sam

PACKAGE = "realtime_sam"
ROOT = Path(realtime_sam.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the package (a package's name -> its ``__init__.py``)."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports that run when the module is imported: not in functions, not under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
            return
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _targets(name: str, is_package: bool, node: ast.Import | ast.ImportFrom, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``node`` (in module ``name``) imports."""
    if isinstance(node, ast.Import):
        wanted = [alias.name for alias in node.names]
    else:
        if node.level:
            base = name.split(".") if is_package else name.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            stem = ".".join(base + ([node.module] if node.module else []))
        else:
            stem = node.module or ""
        # ``from pkg import sub`` imports the module ``pkg.sub`` when there is one.
        wanted = [stem, *(f"{stem}.{alias.name}" for alias in node.names)]
    return {w for w in wanted if w in modules}


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports at module level (absolute and relative)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in _module_level_imports(tree):
            edges |= _targets(name, is_package, node, modules)
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as ``[a, b, ..., a]``, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = dfs(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = dfs(start)
            if cycle:
                return cycle
    return None


def test_the_graph_sees_relative_and_absolute_imports():
    graph = import_graph()
    assert "realtime_sam.tracking.association" in graph["realtime_sam.tracking.engine"]  # from realtime_sam.tracking.association import ...
    assert "realtime_sam.model.checkpoint" in graph["realtime_sam.model.weights"]  # from realtime_sam.model import checkpoint
    assert "realtime_sam.model.runtime.model" in graph["realtime_sam.model.runtime"]  # a package's __init__
    assert "realtime_sam.config" not in graph["realtime_sam.tracking.engine"]  # only under TYPE_CHECKING
    assert "realtime_sam.model.loader" not in graph["realtime_sam.tracking.engine"]  # only inside a function


def test_find_cycle_names_the_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_module_level_import_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "module-level import circle: " + " -> ".join(cycle)


def test_the_engine_imports_without_torch():
    code = "import sys, realtime_sam.tracking.engine; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", "importing realtime_sam.tracking.engine imported torch"


# The public API (README, "What the package exports"): these names, importable from the top-level package.
PUBLIC = [
    "sam_model_registry", "SamPredictor", "SamAutomaticMaskGenerator",
    "track", "annotate", "ObjectPrompt", "Engine", "Pipeline", "open_source",
    "load_config", "Config", "ModelConfig", "load_model", "ModelRunner",
    "Frame", "FrameResult", "TrackResult", "TrackState", "track_many", "StreamResult", "StreamSpec", "StreamsFailed",
    "make_sink", "open_sinks",
]


def test_the_public_api_is_exported_by_the_top_level_package():
    missing = [name for name in PUBLIC if name not in realtime_sam.__all__]
    assert not missing, f"not in realtime_sam.__all__: {missing}"
    for name in PUBLIC:
        obj = getattr(realtime_sam, name)
        assert getattr(obj, "__name__", name) == name or name == "sam_model_registry", name
    readme = (ROOT.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### What the package exports") :]
    section = section[: section.index("\n## ")]
    undocumented = [name for name in PUBLIC if f"`{name}`" not in section]
    assert not undocumented, f"exported but not in README's table: {undocumented}"


def test_importing_the_package_stays_light():
    code = "import sys, realtime_sam; print(sorted(m for m in ('torch', 'cv2', 'av') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"import realtime_sam loaded {out.stdout.strip()}"
