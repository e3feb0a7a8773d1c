"""The package's structure: no import cycles, no gating-name tests outside gmoe/gates, no
module over the size limit, no reference to documents outside the repository."""

import ast
from pathlib import Path

import pytest

import gmoe
from gmoe.gates import available_gatings

PACKAGE = Path(gmoe.__file__).parent
MODULES = sorted(p for p in PACKAGE.rglob("*.py"))
# One responsibility per module: past this many lines a module is doing two jobs.
MAX_LINES = 800


def _module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path, known):
    """Modules of the package that ``path`` imports, anywhere in the file."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for alias in node.names:
                full = f"{target}.{alias.name}"
                found.add(full if full in known else target)
    return {m for m in found if m in known and m != name}


def test_no_import_cycles():
    known = {_module_name(p) for p in MODULES}
    graph = {_module_name(p): _imports(p, known) for p in MODULES}
    # A package's __init__ re-exports its children; a child importing a sibling through
    # the package is the same edge. Cycles through an __init__ and its own children are
    # the package's re-exports, not a dependency loop: drop parent -> child edges.
    for name, targets in graph.items():
        graph[name] = {t for t in targets if not t.startswith(name + ".")}
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def _mentions_a_gate(node):
    """Whether an expression reads a gating family's name (``m.gating``, ``fit["gating"]``,
    ``family.name``, a variable called ``gating`` or ``family``)."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and ("gating" in sub.id or "family" in sub.id):
            return True
        if isinstance(sub, ast.Attribute) and sub.attr in ("gating", "name", "family"):
            return True
        if isinstance(sub, ast.Constant) and sub.value == "gating":
            return True
    return False


def _gating_name_tests(path):
    """Comparisons of something that names a gate with a registered gating name."""
    names = set(available_gatings())
    hits = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        for side in sides:
            values = side.elts if isinstance(side, ast.Tuple | ast.List | ast.Set) else [side]
            if any(isinstance(v, ast.Constant) and v.value in names for v in values) \
                    and any(_mentions_a_gate(other) for other in sides if other is not side):
                hits.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
                break
    return hits


def test_no_gating_name_is_tested_outside_the_gates_package():
    outside = [p for p in MODULES if "gates" not in p.relative_to(PACKAGE).parts]
    hits = [hit for p in outside for hit in _gating_name_tests(p)]
    assert not hits, "gating names compared outside gmoe/gates: " + ", ".join(hits)


def test_the_name_check_finds_a_comparison(tmp_path):
    # The check above must be able to fail.
    probe = PACKAGE / "_probe_for_test.py"
    probe.write_text('def f(m, fit, family):\n    a = m.gating == "topk"\n'
                     '    b = fit["gating"] in ("softmax", "temperature")\n'
                     '    return a, b, family.name != "activation", m.kind == "softmax"\n')
    try:
        assert _gating_name_tests(probe) == [f"gmoe/_probe_for_test.py:{i}" for i in (2, 3, 4)]
    finally:
        probe.unlink()


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_size(path):
    n_lines = len(path.read_text().splitlines())
    assert n_lines <= MAX_LINES, f"{path.name} has {n_lines} lines (limit {MAX_LINES})"


def test_no_reference_to_documents_outside_the_repository():
    roots = [PACKAGE, PACKAGE.parent / "docs", PACKAGE.parent / "README.md"]
    files = [f for r in roots if r.exists()
             for f in ([r] if r.is_file() else r.rglob("*"))
             if f.suffix in {".py", ".rst", ".md", ".txt"} and "_build" not in f.parts
             and "generated" not in f.parts and "auto_examples" not in f.parts]
    hits = [f"{f.relative_to(PACKAGE.parent)}:{i}" for f in files
            for i, line in enumerate(f.read_text().splitlines(), 1)
            if "SPEC" in line or "DESIGN.md" in line or "STYLE.md" in line]
    assert not hits, "references to documents outside the repository: " + ", ".join(hits)
