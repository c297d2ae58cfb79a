"""The shape of the house, checked by reading the source (docs/architecture.md says it in words): no import
circle, one writer of every job's status (jobs/lifecycle.py) and of a dataset's current run (training/runs.py),
the job system importing no domain module, `ml/` importing no Django and nothing of the app, every domain
package where the notes say, no module importing another package's private names, every job kind registered.

The tests read the code with `ast` (nothing is imported), function-local imports included.
"""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOMAINS = ("datasets", "training", "serving", "health", "labelling")
PACKAGES = ("management", "api", "kerasui", "jobs", "ml", *DOMAINS)


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


def test_no_module_of_the_project_imports_back_into_a_circle():
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


def _imported_modules(path: Path) -> list[str]:
    """Every module a file's import statements name (absolute ones; the project uses no relative import)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append(node.module or "")
    return found


def test_the_job_system_imports_no_domain_module():
    graph = import_graph()
    assert any(name.startswith(DOMAINS) for name in graph)  # the walk sees them at all
    for name in (name for name in graph if name.startswith("jobs")):
        reached = {target for target in graph[name] if not target.startswith("jobs")}
        # The errors a job refuses with are the app's shared exception types, nothing else of the app.
        assert reached <= {"management.errors", "management.processes", "kerasui.celery"}, (name, reached)


def test_the_ml_package_imports_no_django_and_nothing_of_the_app():
    ml_modules = [(name, path) for name, path in _sources().items() if name.split(".")[0] == "ml"]
    assert len(ml_modules) > 10
    others = set(PACKAGES) - {"ml"}
    for name, path in ml_modules:
        for module in _imported_modules(path):
            assert module.split(".")[0] != "django", (name, module)
            assert module.split(".")[0] not in others, (name, module)


def test_the_ml_check_sees_a_django_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import django.db\nfrom management.models import DataSet\n")
    assert _imported_modules(sample) == ["django.db", "management.models"]


EXPECTED_MODULES = {
    "datasets": {"models", "services", "deletions", "views", "api", "serializers"},
    "training": {"models", "services", "runs", "trainer", "job", "pretrained", "versions", "promotion", "compare"},
    "serving": {"models", "services", "prediction", "explanations", "exports", "warm", "views", "api"},
    "health": {"models", "services", "job", "views", "api"},
    "labelling": {"models", "services", "suggestion_jobs", "views", "api", "serializers"},
}


def test_each_domain_is_a_package_with_its_models_use_cases_and_endpoints():
    """A newcomer finds a concern by its folder's name; the app `management` keeps no use case of its own."""
    for package, modules in EXPECTED_MODULES.items():
        assert (ROOT / package / "__init__.py").is_file(), package
        present = {path.stem for path in (ROOT / package).glob("*.py")}
        assert modules <= present, (package, modules - present)
    assert not (ROOT / "management" / "services").exists()
    assert not (ROOT / "management" / "ml").exists()


def private_imports(sources: dict[str, Path]) -> list[str]:
    """`from a.b import _name` where a.b is a module of another top-level package than the importer's."""
    found = []
    for name, path in sources.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.ImportFrom) or not node.module:
                continue
            if node.module.split(".")[0] not in PACKAGES or node.module.split(".")[0] == name.split(".")[0]:
                continue
            found += [
                f"{name} imports {node.module}.{alias.name}" for alias in node.names if alias.name.startswith("_")
            ]
    return found


def test_no_module_imports_another_packages_private_names(tmp_path):
    (tmp_path / "sample.py").write_text("from training.runs import _choose\nfrom training.runs import choose\n")
    assert private_imports({"serving.sample": tmp_path / "sample.py"}) == [
        "serving.sample imports training.runs._choose"
    ]
    assert private_imports({"training.sample": tmp_path / "sample.py"}) == []
    assert private_imports(_sources()) == []


def test_every_job_model_is_a_registered_kind_and_every_kind_a_job_model():
    """A new kind is a module plus a registry entry: a Job model nobody registered would never run."""
    registry = (ROOT / "jobs" / "registry.py").read_text()
    app_models = (ROOT / "management" / "models.py").read_text()
    job_models = {}
    for package in DOMAINS:
        source = (ROOT / package / "models.py").read_text()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef) and any(getattr(base, "id", "") == "Job" for base in node.bases):
                job_models[node.name] = package
                # A model of the app `management`: its table and its migrations' history stay that app's.
                assert 'app_label = "management"' in ast.get_source_segment(source, node), node.name
    assert set(job_models) == {
        "TrainingRun",
        "HealthCheck",
        "ExportJob",
        "ImportJob",
        "SuggestionJob",
        "DataSetDeletion",
    }
    for name, package in job_models.items():
        assert f'model="management.{name}"' in registry, name
        # Django's registry finds a model through the app's models module.
        assert re.search(rf"^from {package}\.models import .*\b{name}\b", app_models, re.M), name


def test_the_architecture_notes_name_every_package_and_job_kind():
    notes = (ROOT / "docs" / "architecture.md").read_text()
    for package in PACKAGES:
        assert f"`{package}/`" in notes, package
    for module in ("registry", "lifecycle", "runner", "watchdog", "budgets", "process"):
        assert (ROOT / "jobs" / f"{module}.py").is_file() and f"jobs/{module}.py" in notes, module
    for kind in ("training", "health", "export", "import", "suggestions"):
        assert f"`{kind}`" in notes, kind
