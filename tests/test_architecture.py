"""The shape of the house, checked by reading the source: no import circle, one writer of run status.

Both tests read the code with `ast` (nothing is imported), function-local imports included.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("management", "api", "kerasui")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    files = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" not in path.parts:
                files[_module_name(path)] = path
    return files


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module an imported name lives in (`a.b.c` → `a.b` when `c` is a name in it)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> dict[str, set[str]]:
    """Each project module and the project modules it imports, wherever the import statement is."""
    modules = _sources()
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                resolved = _resolve(target, modules)
                if resolved is not None and resolved != name:
                    graph[name].add(resolved)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of imports, as the list of modules around it, or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for child in sorted(graph[node]):
            if state.get(child) == "open":
                return [*stack[stack.index(child) :], child]
            if child not in state:
                found = visit(child)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_module_of_management_or_api_imports_back_into_a_circle():
    graph = import_graph()
    assert "management.services.datasets" in graph["api.views"]  # the walk sees imports at all
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


LIFECYCLE = "management.services.runs"
WRITE_METHODS = {"update", "create", "get_or_create", "update_or_create", "bulk_update", "bulk_create"}
LIFECYCLE_FIELDS = {"status", "current_run", "current_run_id"}


def lifecycle_writes(path: Path) -> list[str]:
    """Where a file writes a run's status or a dataset's current run: ORM writes and attribute assignments."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in WRITE_METHODS:
            found += [f"{path.name}:{node.lineno} {kw.arg}=" for kw in node.keywords if kw.arg in LIFECYCLE_FIELDS]
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        for target in targets:
            if isinstance(target, ast.Attribute) and target.attr in LIFECYCLE_FIELDS:
                found.append(f"{path.name}:{node.lineno} .{target.attr} =")
    return found


def test_the_writes_finder_sees_an_update_of_status(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("TrainingRun.objects.filter(pk=1).update(status='failed')\ndataset.current_run = run\n")
    assert sorted(lifecycle_writes(sample)) == ["sample.py:1 status=", "sample.py:2 .current_run ="]


# Health checks have a lifecycle of their own, which writes HealthCheck.status and never a run's.
HEALTH_LIFECYCLE = "management.services.health_lifecycle"


def test_only_the_lifecycle_writes_a_runs_status_or_a_datasets_current_run():
    writers = {name: lifecycle_writes(path) for name, path in _sources().items()}
    assert writers[LIFECYCLE], "the lifecycle itself is seen writing"
    assert {name: found for name, found in writers.items() if found and name not in {LIFECYCLE, HEALTH_LIFECYCLE}} == {}
    health = _sources()[HEALTH_LIFECYCLE].read_text()
    assert "TrainingRun" not in health and "current_run" not in health
