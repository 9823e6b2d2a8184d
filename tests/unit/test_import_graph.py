"""No import circle among ldae's modules, counting the imports inside functions as well as the top-level ones.

The graph is read from the source with `ast` (nothing is imported): an edge A -> B for every `import B` or
`from B import x` in A, where `from P import M` names the submodule P.M when M is one. A package's own
`__init__` is not an edge of its submodules (Python runs it first, whoever imports them).
"""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import ROOT

PACKAGE = ROOT / "ldae"


def module_files(root: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> its file, for every .py under the package."""
    mods = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The ldae modules that module `name` (file `path`) imports anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, one level up per extra dot
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import ldae.x.y` as a name inside ldae.x.y
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    files = module_files(root)
    return {name: imports_of(name, path, set(files)) for name, path in files.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan), each as a path A -> ... -> A."""
    index, low, stack, on_stack, comps = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(set(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_in(graph, comp) for comp in comps]


def _cycle_in(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A shortest path from the component's first module back to itself (breadth first inside the component)."""
    start = min(comp)
    parent, frontier = {start: None}, [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & comp):
                if w == start:
                    path = [v]
                    while parent[path[-1]] is not None:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start] if len(path) > 1 else [start, v, start]
                if w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"{sorted(comp)} is not strongly connected")


def test_the_finder_sees_a_circle_through_a_function_level_import(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import g\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    (pkg / "d.py").write_text("from pkg import a\n")  # into the circle, not on it
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.c"} and graph["pkg.d"] == {"pkg.a"}
    assert find_cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]]
    (pkg / "c.py").write_text("import pkg.d\n")  # c -> d -> a -> b -> c
    assert len(find_cycles(import_graph(pkg))[0]) == 5
    (pkg / "c.py").write_text("")
    assert find_cycles(import_graph(pkg)) == []


def test_ldae_has_no_import_circle():
    graph = import_graph()
    assert {"ldae.config", "ldae.evaluation", "ldae.lit.probe"} <= set(graph)
    cycles = find_cycles(graph)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


# The data path, bottom to top (ARCHITECTURE.md): a module may import its own layer and those below it.
LAYERS = [
    ("tables", ["ldae.errors", "ldae.choices", "ldae.paper", "ldae.weights", "ldae.utils", "ldae.models.registry",
                "ldae.diffusion.predictions", "ldae.signals", "ldae.rules"]),
    ("config", ["ldae.keys", "ldae.extras", "ldae.plugins", "ldae.plan", "ldae.config", "ldae.cli",
                "ldae.run_identity"]),
    ("processes", ["ldae.distributed", "ldae.resume"]),
    ("ops", ["ldae.ops"]),  # patches and keyed noise: the tensor operations every layer above shares
    ("data", ["ldae.data"]),
    ("tokenizers", ["ldae.tokenizers"]),
    ("diffusion", ["ldae.diffusion"]),
    ("models", ["ldae.models"]),
    ("lit", ["ldae.lit", "ldae.speed", "ldae.pictures", "ldae.generation", "ldae.wandb_logger", "ldae.runtime"]),
    ("stages", ["ldae.stages", "ldae.evaluation", "ldae.checkpoints", "ldae.timm_export", "ldae.bench"]),
    ("commands", ["ldae.train", "ldae.probe", "ldae.export", "ldae"]),
    ("experiments", ["ldae.report"]),  # runs of ldae-train composed into trajectories, comparisons, claims
]
# Imports that run up a layer, each with the reason it stays: none left.
KNOWN_UPWARD: dict[tuple[str, str], str] = {}


def layer_of(module: str) -> int | None:
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > best[1]):
                best = (i, len(p))
    return None if best is None else best[0]


def test_every_module_has_a_layer_and_none_imports_a_layer_above():
    graph = import_graph()
    assert [m for m in graph if layer_of(m) is None] == []
    upward = {(m, t) for m, ts in graph.items() for t in ts if layer_of(t) > layer_of(m)}
    assert upward == set(KNOWN_UPWARD), sorted(upward - set(KNOWN_UPWARD))
