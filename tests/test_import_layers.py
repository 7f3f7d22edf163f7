"""No import cycles between the parts of dlrm_bench (its subpackages and top-level modules).

Every `import dlrm_bench.X...` / `from dlrm_bench.X... import ...` in a part's source, at module level or inside a
function, is an edge from that part to part X; the graph of parts must have no cycle, so that each part can be read
(and tested) on top of the ones below it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "dlrm_bench"


def part_of(module: str) -> str | None:
    """'dlrm_bench.harness.sut' -> 'harness'; 'dlrm_bench.errors' -> 'errors'; other modules -> None."""
    names = module.split(".")
    return names[1] if names[0] == "dlrm_bench" and len(names) > 1 else None


def imported_modules(source: Path) -> set[str]:
    """Every dlrm_bench module the file imports (a `from dlrm_bench import x` counts as dlrm_bench.x)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(), str(source))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "dlrm_bench":
                found.update(f"dlrm_bench.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
    return {m for m in found if m.startswith("dlrm_bench.")}


def part_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for source in PACKAGE.rglob("*.py"):
        relative = source.relative_to(PACKAGE)
        part = relative.parts[0].removesuffix(".py")
        if part == "__init__":
            continue
        edges = graph.setdefault(part, set())
        edges.update(p for p in map(part_of, imported_modules(source)) if p and p != part)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_parts_of_dlrm_bench_import_each_other_without_a_cycle() -> None:
    graph = part_graph()
    assert {"harness", "engines", "criteo", "triton_server"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_checker_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
