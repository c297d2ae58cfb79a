"""The shape of the house, checked by reading the source (docs/architecture.md says it in words): no import
circle, one writer of every job's status (jobs/lifecycle.py) and of a dataset's current run (runs.py), the
job system importing no domain module, `ml/` importing no Django, every job kind registered.

The tests read the code with `ast` (nothing is imported), function-local imports included.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("management", "api", "kerasui", "jobs")


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
    assert "datasets.services" in graph["api.views"]  # the walk sees imports at all
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


JOB_LIFECYCLE = "jobs.lifecycle"
RUN_LIFECYCLE = "training.runs"
WRITE_METHODS = {"update", "create", "get_or_create", "update_or_create", "bulk_update", "bulk_create"}
LIFECYCLE_FIELDS = {"status", "current_run", "current_run_id"}


def lifecycle_writes(path: Path, fields: set[str] = LIFECYCLE_FIELDS) -> list[str]:
    """Where a file writes a job's status or a dataset's current run: ORM writes and attribute assignments."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in WRITE_METHODS:
            found += [f"{path.name}:{node.lineno} {kw.arg}=" for kw in node.keywords if kw.arg in fields]
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        for target in targets:
            if isinstance(target, ast.Attribute) and target.attr in fields:
                found.append(f"{path.name}:{node.lineno} .{target.attr} =")
    return found


def test_the_writes_finder_sees_an_update_of_status(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("TrainingRun.objects.filter(pk=1).update(status='failed')\ndataset.current_run = run\n")
    assert sorted(lifecycle_writes(sample)) == ["sample.py:1 status=", "sample.py:2 .current_run ="]


def test_only_the_job_lifecycle_writes_a_jobs_status():
    writers = {name: lifecycle_writes(path, {"status"}) for name, path in _sources().items()}
    assert writers[JOB_LIFECYCLE], "the lifecycle itself is seen writing"
    assert {name: found for name, found in writers.items() if found and name != JOB_LIFECYCLE} == {}


def test_only_the_run_lifecycle_chooses_a_datasets_current_run():
    writers = {name: lifecycle_writes(path, {"current_run", "current_run_id"}) for name, path in _sources().items()}
    assert writers[RUN_LIFECYCLE], "the run lifecycle itself is seen writing"
    assert {name: found for name, found in writers.items() if found and name != RUN_LIFECYCLE} == {}


def test_the_job_system_imports_no_domain_module_and_the_ml_package_no_django():
    graph = import_graph()
    domain = [name for name in graph if name.startswith(("management.services", "ml", "api"))]
    assert domain  # the walk sees them at all
    for name in (name for name in graph if name.startswith("jobs")):
        reached = {target for target in graph[name] if not target.startswith("jobs")}
        # The errors a job refuses with are the services' shared exception types, nothing else of theirs.
        assert reached <= {"management.errors", "management.processes", "kerasui.celery"}, (name, reached)
    for name, path in _sources().items():
        if name.startswith("ml"):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                modules = [alias.name for alias in getattr(node, "names", [])] if isinstance(node, ast.Import) else []
                modules += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                assert not any(module.split(".")[0] == "django" for module in modules), (name, modules)
                assert not any(
                    module.split(".")[0] in {"management", "jobs", "api"} and not module.startswith("ml")
                    for module in modules
                ), (name, modules)


def test_every_job_model_is_a_registered_kind_and_every_kind_a_job_model():
    """A new kind is a module plus a registry entry: a Job model nobody registered would never run."""
    registry = (ROOT / "jobs" / "registry.py").read_text()
    models = ast.parse((ROOT / "management" / "models.py").read_text())
    job_models = [
        node.name
        for node in ast.walk(models)
        if isinstance(node, ast.ClassDef) and any(getattr(base, "id", "") == "Job" for base in node.bases)
    ]
    assert set(job_models) == {"TrainingRun", "HealthCheck", "ExportJob", "ImportJob", "SuggestionJob"}
    for name in job_models:
        assert f'model="management.{name}"' in registry, name


def test_the_architecture_notes_name_every_package_and_job_kind():
    notes = (ROOT / "docs" / "architecture.md").read_text()
    for package in ("jobs/", "ml/", "management/services/", "api/", "kerasui/"):
        assert package in notes, package
    for module in ("registry", "lifecycle", "runner", "watchdog", "budgets", "process"):
        assert (ROOT / "jobs" / f"{module}.py").is_file() and f"jobs/{module}.py" in notes, module
    for kind in ("training", "health", "export", "import", "suggestions"):
        assert f"`{kind}`" in notes, kind
