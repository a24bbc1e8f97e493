"""The house's shape, read from the source with ``ast`` (nothing is imported): no import cycles, no module over
400 lines, no import from a higher layer of ``LAYERS``, and ``docs/architecture.md`` true to both.

An import is any ``import`` / ``from ... import`` anywhere in a module (inside functions too: a cycle made
of lazy imports is still a cycle), a name taken from a package face resolved to the module that defines it
(``from ijepa_eval.features import get_features`` depends on ``features/extract.py``, whether the face
imports it eagerly or lists it in ``_EXPORTS``), and a string constant that is exactly a module's dotted name
(``cli.COMMAND_MODULES``, which ``importlib`` loads).
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ijepa_eval"
DOC = ROOT / "docs" / "architecture.md"
MAX_LINES = 400

# Top-level modules every room may use: the "base" room.
BASE = {"bootstrap", "cli_base", "devices", "env", "errors", "io", "lazy", "paths", "proportions", "results",
        "schedules", "stats", "threads", "validate"}
# Bottom to top. A module imports its own room and rooms of lower layers only; rooms that share a layer are
# independent of each other. A room is a sub-package (``features``) or a top-level module (``demo``).
LAYERS = [
    ("base",),
    ("data", "encoders"),
    ("features",),
    ("probes",),
    ("finetune", "pretrain"),
    ("protocols",),
    ("leaderboard", "shift"),
    ("demo",),
    ("cli",),
]
LAYER_OF = {room: i for i, rooms in enumerate(LAYERS) for room in rooms}


def module_files() -> dict[str, Path]:
    files = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        files[".".join(parts)] = path
    return files


def face_exports(tree: ast.Module, package: str) -> dict[str, str]:
    """Name -> defining module for a package's ``__init__``: eager re-exports and lazy ``_EXPORTS``."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.update({alias.asname or alias.name: node.module for alias in node.names})
        elif isinstance(node, ast.Dict) and all(isinstance(k, ast.Constant) for k in node.keys):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    names[key.value] = f"{package}.{value.value}"  # lazy_exports: relative to the package
    return names


def longest_module(name: str, modules: set[str]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(name: str, path: Path, tree: ast.Module, modules: set[str], faces: dict) -> dict[str, int]:
    """Module -> first line importing it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, int] = {}

    def add(target: str | None, line: int) -> None:
        # an unresolved name of the module's own package face is the face re-exporting, not a dependency
        if target and target != name and not name.startswith(target + "."):
            found.setdefault(target, line)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(longest_module(alias.name, modules), node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in modules:
                    add(full, node.lineno)
                elif alias.name in faces.get(base, {}):
                    add(longest_module(faces[base][alias.name], modules), node.lineno)
                else:
                    add(longest_module(base, modules), node.lineno)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in modules:
            add(node.value, node.lineno)
    return found


def read_package():
    files = module_files()
    trees = {m: ast.parse(p.read_text(encoding="utf-8"), filename=str(p)) for m, p in files.items()}
    faces = {m: face_exports(trees[m], m) for m, p in files.items() if p.name == "__init__.py"}
    modules = set(files)
    graph = {m: imports_of(m, files[m], trees[m], modules, faces) for m in files}
    return files, graph


FILES, GRAPH = read_package()


def room_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) == 1:
        return None  # the package face ``ijepa_eval`` itself: re-exports, ranks above every room
    return "base" if parts[1] in BASE else parts[1]


def where(module: str, target: str) -> str:
    return f"{FILES[module].relative_to(ROOT)}:{GRAPH[module][target]} imports {target}"


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's components with more than one module, i.e. the import cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_reader_sees_the_imports_that_exist():
    """The graph is real: known edges of every kind are found (a reader that sees nothing passes everything)."""
    assert "ijepa_eval.features.extract" in GRAPH["ijepa_eval.features.commands"]  # lazy, inside a function
    assert "ijepa_eval.protocols.finetuning" in GRAPH["ijepa_eval.protocols.runner"]  # lazy, inside a function
    assert "ijepa_eval.encoders.encoder" in GRAPH["ijepa_eval.features.planning"]  # via the face's _EXPORTS
    assert "ijepa_eval.data.registry" in GRAPH["ijepa_eval.pretrain.batches"]  # via the face's eager import
    assert "ijepa_eval.pretrain.commands" in GRAPH["ijepa_eval.cli"]  # a module name given to importlib
    assert "ijepa_eval.features.cache" in GRAPH["ijepa_eval.features.shard_writer"]  # a plain from-import
    fake = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1, "d": 1}, "d": {}}
    assert strongly_connected(fake) == [["a", "b", "c"]]


def test_no_import_cycles():
    lines = []
    for component in strongly_connected(GRAPH):
        members = set(component)
        lines.append(f"cycle of {len(component)}: {', '.join(component)}")
        lines += [f"    {where(m, t)}" for m in component for t in sorted(GRAPH[m]) if t in members]
    if lines:
        pytest.fail(f"{sum(line.startswith('cycle') for line in lines)} import cycle(s); a lazy import is still "
                    "an import. Move the shared piece down into a module both can import:\n" + "\n".join(lines),
                    pytrace=False)


def test_no_module_over_400_lines():
    long = sorted((len(p.read_text(encoding="utf-8").splitlines()), str(p.relative_to(ROOT)))
                  for p in FILES.values())
    over = [f"    {path}: {n} lines" for n, path in reversed(long) if n > MAX_LINES]
    if over:
        pytest.fail(f"{len(over)} module(s) over {MAX_LINES} lines; split them by job:\n" + "\n".join(over),
                    pytrace=False)


def test_every_room_has_a_layer():
    rooms = {room_of(m) for m in FILES} - {None}
    unranked = sorted(rooms - set(LAYER_OF))
    assert not unranked, f"rooms missing from LAYERS (and docs/architecture.md): {unranked}"
    assert set(LAYER_OF) <= rooms, f"LAYERS names rooms that do not exist: {sorted(set(LAYER_OF) - rooms)}"
    assert {m.split(".")[1] for m in FILES if room_of(m) == "base"} == BASE


def test_no_import_from_a_higher_layer_or_a_sibling_room():
    bad = []
    for module, targets in sorted(GRAPH.items()):
        src = room_of(module)
        for target in sorted(targets):
            dst = room_of(target)
            if None in (src, dst) or src == dst or src not in LAYER_OF or dst not in LAYER_OF:
                continue
            if LAYER_OF[dst] >= LAYER_OF[src]:
                kind = "a sibling room" if LAYER_OF[dst] == LAYER_OF[src] else "a higher layer"
                bad.append(f"    {where(module, target)} ({src} -> {dst}: {kind})")
    if bad:
        pytest.fail("imports against LAYERS (bottom to top: " + " < ".join("|".join(r) for r in LAYERS)
                    + "); move the piece both need down, or dispatch from the upper room:\n" + "\n".join(bad),
                    pytrace=False)


def test_the_layer_check_catches_an_upward_import():
    assert LAYER_OF[room_of("ijepa_eval.protocols.runner")] > LAYER_OF[room_of("ijepa_eval.finetune.train")]
    assert room_of("ijepa_eval.cli_base") == "base" and room_of("ijepa_eval.demo") == "demo"
    assert room_of("ijepa_eval") is None


# ---------------------------------------------------------------------------------------- docs/architecture.md


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def top_level_names(module: str) -> set[str]:
    tree = ast.parse(FILES[module].read_text(encoding="utf-8"))
    names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    names |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    return names | set(face_exports(tree, module)) if FILES[module].name == "__init__.py" else names


def test_every_module_the_map_names_exists():
    text = doc_text()
    missing = []
    for token in re.findall(r"`([^`\s]+)`", text):
        if re.fullmatch(r"[\w./-]+\.py", token) or re.fullmatch(r"[\w./-]+/", token):
            if not ((PACKAGE / token).exists() or (ROOT / token).exists()):
                missing.append(token)
        elif re.fullmatch(r"ijepa_eval(\.\w+)+", token) and token not in FILES:
            module, _, attr = token.rpartition(".")  # a module's attribute, e.g. a function it defines
            if module not in FILES or attr not in top_level_names(module):
                missing.append(token)
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"
    assert len(re.findall(r"`[\w/]+\.py`", text)) > 20  # it does name modules (else this test checks nothing)


def test_the_map_lists_the_layers_of_this_test():
    """The doc's layer table (rows ``| N | rooms | ... |``) has the rooms of LAYERS, in the same order."""
    rows = re.findall(r"^\|\s*(\d+)\s*\|([^|]*)\|", doc_text(), flags=re.M)
    assert [int(n) for n, _ in rows] == list(range(len(LAYERS)))
    for (n, cell), rooms in zip(rows, LAYERS, strict=True):
        named = {t.rstrip("/").removesuffix(".py") for t in re.findall(r"`([^`]+)`", cell)}
        expected = BASE if rooms == ("base",) else set(rooms)
        assert named == expected, f"layer {n} of docs/architecture.md lists {sorted(named)}, LAYERS {sorted(expected)}"


@pytest.mark.parametrize("section", ["a new checkpoint format", "a new protocol", "a new dataset", "a new table"])
def test_the_map_says_where_new_things_go(section):
    assert f"### {section}" in doc_text().lower()
