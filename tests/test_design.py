"""The design's rules, checked on the source: families are plug-ins, imports flow one way.

Outside a family's own modules (its folder under ``stemsplit/families/`` and the networks
under ``stemsplit/models/``) and the one table that names the families, no source file
mentions a family, its formats, settings or flags: the words are each family's own
(``Family.vocabulary``, its name and its options' flags). No module imports another in a
cycle, and only the command line (``stemsplit/cli/``) imports typer and rich.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stemsplit.errors import ModelError
from stemsplit.families import FAMILIES, all_families

PACKAGE = Path(__file__).resolve().parent.parent / "stemsplit"


def _family_terms() -> re.Pattern:
    """Every family's words: its name, its vocabulary, its options' flags."""
    words = []
    for family in all_families():
        words.append(re.escape(family.name))
        words += list(family.vocabulary)
        words += [re.escape(option.flag) for option in family.options]
    return re.compile("|".join(words), re.IGNORECASE)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_family_module(path: Path) -> bool:
    """A family's own module (in its folder under families/) or a network (models/)."""
    relative = path.relative_to(PACKAGE)
    if relative.parts[0] == "models":
        return relative.name != "__init__.py"
    return relative.parts[0] == "families" and len(relative.parts) > 2


def _shared_sources() -> list[Path]:
    """Every module but the families' own ones and the networks."""
    return [path for path in sorted(PACKAGE.rglob("*.py")) if not _is_family_module(path)]


def test_the_family_words_come_from_the_families():
    terms = _family_terms()
    for family in all_families():
        assert terms.search(family.name)
        for option in family.options:
            assert terms.search(option.flag)


def test_the_shared_code_names_no_family():
    terms = _family_terms()
    offenders = []
    for path in _shared_sources():
        text = path.read_text(encoding="utf-8")
        if path == PACKAGE / "families" / "__init__.py":
            # The table: it names each family once, in FAMILIES, and nothing else.
            table = text[text.index("FAMILIES: dict"):text.index("}", text.index("FAMILIES: dict"))]
            text = text.replace(table, "")
        for number, line in enumerate(text.splitlines(), 1):
            if terms.search(line):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert not offenders, "family knowledge outside the families:\n" + "\n".join(offenders)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    """The line numbers inside ``if TYPE_CHECKING:`` blocks."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and (
                (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
                or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _imports() -> dict[str, set[str]]:
    """Each stemsplit module -> the stemsplit modules it imports, at module level or inside
    functions alike (not under ``if TYPE_CHECKING:``). ``from package import name`` counts
    as importing the module ``package.name`` when there is one, else the package."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = _type_checking_lines(tree)
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        targets: set[str] = set()
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skipped:
                continue
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                for alias in node.names:
                    child = f"{source}.{alias.name}"
                    targets.add(child if child in modules else source)
        graph[module] = {target for target in targets if target in modules and target != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_another_in_a_cycle():
    graph = _imports()
    assert "stemsplit.pipeline" in graph["stemsplit.batch"]  # the finder sees imports
    assert "stemsplit.audio.formats" in graph["stemsplit.plan"]
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def _importers_of(packages: tuple[str, ...], allowed_folder: str) -> list[str]:
    """Where a module outside ``stemsplit/<allowed_folder>/`` imports one of ``packages``."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] == allowed_folder:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            for name in names:
                if name.split(".")[0] in packages:
                    offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {name}")
    return offenders


def test_only_the_command_line_imports_typer_and_rich():
    offenders = _importers_of(("typer", "rich", "click"), "cli")
    assert not offenders, offenders


def test_only_the_cluster_package_imports_ray():
    offenders = _importers_of(("ray",), "cluster")
    assert not offenders, offenders
    probe = ("import sys, stemsplit.cluster, stemsplit.cli.separate, stemsplit.batch; "
             "print('ray' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def test_shared_code_reaches_families_only_through_the_table():
    family_modules = {_module_name(path) for path in PACKAGE.rglob("*.py")
                      if _is_family_module(path)
                      and path.relative_to(PACKAGE).parts[0] == "families"}
    graph = _imports()
    offenders = []
    for path in _shared_sources():
        module = _module_name(path)
        reached = graph.get(module, set()) & family_modules
        if reached:
            offenders.append(f"{module} imports {sorted(reached)}")
    assert not offenders, offenders


def test_the_table_and_the_adapters_agree():
    for name, family in zip(FAMILIES, all_families()):
        assert family.name == name
        assert family.display and family.weights_help
    # A flag several families declare is one option they all read: alike in name and kind.
    declared = {}
    for family in all_families():
        for option in family.options:
            first = declared.setdefault(option.flag, option)
            assert (first.name, first.kind) == (option.name, option.kind), \
                f"two families declare {option.flag} differently"


def test_settings_are_read_in_one_place():
    """STEMSPLIT_* variables are read by stemsplit.settings alone, and never at import."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "settings.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"environ(\.get)?[\[(]\s*[\"']STEMSPLIT_", line):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert not offenders, offenders


def test_a_variable_set_after_import_counts(monkeypatch):
    import stemsplit.cli.separate  # noqa: F401  (the options are built at import)
    from stemsplit import settings
    from stemsplit.resolve import resolve

    monkeypatch.setenv("STEMSPLIT_DEVICE", "cpu")
    monkeypatch.setenv("STEMSPLIT_MODEL", "hdemucs")
    assert settings.device() == "cpu"
    assert resolve().name == "hdemucs_mmi"


def test_help_and_registry_import_no_torch():
    code = ("import sys; import stemsplit.cli.app, stemsplit.registry, stemsplit.resolve; "
            "stemsplit.registry.load_registry(); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("family,entry,message", [
    ("demucs", 'hf_repo = "a/b"\nmembers = ["x"]\nbag_wieghts = [[1.0]]', "unknown key 'bag_wieghts'"),
    ("mdx", 'parameters = { n_fft = 6144, dimf = 3 }', "unknown MDX-Net parameter 'dimf'"),
    ("mdx", 'n_fft = 6144', "unknown key 'n_fft'"),
    ("msst", 'model_type = "bs_roformer"\nchunk = 3', "unknown key 'chunk'"),
    ("msst", 'model_type = "scnet_unofficial"', "model_type must be one of"),
    ("nope", '', "unknown family 'nope'"),
])
def test_unknown_keys_are_refused_when_the_registry_is_read(tmp_path, family, entry, message):
    from stemsplit.registry import load_registry

    path = tmp_path / "weights.toml"
    path.write_text(f'[models.m]\nfamily = "{family}"\nstems = ["vocals", "accompaniment"]\n'
                    f'sample_rate = 44100\n{entry}\n')
    with pytest.raises(ModelError, match=re.escape(message)):
        load_registry(path)
