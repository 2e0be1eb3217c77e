"""The design's rules, checked on the source: families are plug-ins.

Outside a family's own modules (its adapter under ``stemsplit/families/`` and the networks
under ``stemsplit/models/``) and the one table that names the families, no source file
mentions a family, its classes, formats or flags; imports flow one way.
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

FAMILY_TERMS = re.compile(
    r"demucs|\bmdx|roformer|msst|zfturbo|spleeter|\bonnx|onnxruntime|\buvr\b|safetensors|"
    r"\.th\b|\.ckpt|\bn[_-]fft|compensate|primary[_-]stem|denoise|--repo|--config|model[_-]type|"
    r"bag_file|legacy_url|legacy_files|tfc[_-]tdf|band[_-]split|\bmel\b",
    re.IGNORECASE)


def _shared_sources() -> list[Path]:
    """Every module but the families' own ones and the networks."""
    result = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "models" and relative.name != "__init__.py":
            continue  # a family's network code
        if relative.parts[0] == "families" and relative.name not in ("__init__.py", "base.py"):
            continue  # a family's adapter
        result.append(path)
    return result


def test_the_shared_code_names_no_family():
    offenders = []
    for path in _shared_sources():
        text = path.read_text(encoding="utf-8")
        if path == PACKAGE / "families" / "__init__.py":
            # The table: it names each family once, in FAMILIES, and nothing else.
            table = text[text.index("FAMILIES: dict"):text.index("}", text.index("FAMILIES: dict"))]
            text = text.replace(table, "")
        for number, line in enumerate(text.splitlines(), 1):
            if FAMILY_TERMS.search(line):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert not offenders, "family knowledge outside the families:\n" + "\n".join(offenders)


def test_shared_code_reaches_families_only_through_the_table():
    family_modules = {f"stemsplit.families.{name}" for name in
                      (p.stem for p in (PACKAGE / "families").glob("*.py"))} - {
        "stemsplit.families.__init__", "stemsplit.families.base"}
    offenders = []
    for path in _shared_sources():
        module = "stemsplit." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                base = module.rsplit(".", node.level)[0] if node.level else ""
                target = f"{base}.{node.module}" if node.level else node.module
                names = {f"{target}.{alias.name}" for alias in node.names} | {target}
                if names & family_modules:
                    offenders.append(f"{path.name} imports {sorted(names & family_modules)}")
    assert not offenders, offenders


def test_the_table_and_the_adapters_agree():
    for name, family in zip(FAMILIES, all_families()):
        assert family.name == name
        assert family.display and family.weights_help
    flags = [option.flag for family in all_families() for option in family.options]
    assert len(flags) == len(set(flags)), "two families declare the same option"


def test_models_cli_and_cli_do_not_import_each_other_in_a_cycle():
    code = ("import sys; import stemsplit.models_cli; "
            "assert 'stemsplit.cli' not in sys.modules, 'models_cli imports cli'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_help_and_registry_import_no_torch():
    code = ("import sys; import stemsplit.cli, stemsplit.registry; "
            "stemsplit.registry.load_registry(); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("family,entry,message", [
    ("demucs", 'hf_repo = "a/b"\nmembers = ["x"]\nbag_wieghts = [[1.0]]', "unknown key 'bag_wieghts'"),
    ("mdx", 'parameters = { n_fft = 6144, dimf = 3 }', "unknown MDX-Net parameter 'dimf'"),
    ("mdx", 'n_fft = 6144', "unknown key 'n_fft'"),
    ("msst", 'model_type = "bs_roformer"\nchunk = 3', "unknown key 'chunk'"),
    ("msst", 'model_type = "scnet"', "model_type must be one of"),
    ("nope", '', "unknown family 'nope'"),
])
def test_unknown_keys_are_refused_when_the_registry_is_read(tmp_path, family, entry, message):
    from stemsplit.registry import load_registry

    path = tmp_path / "weights.toml"
    path.write_text(f'[models.m]\nfamily = "{family}"\nstems = ["vocals", "accompaniment"]\n'
                    f'sample_rate = 44100\n{entry}\n')
    with pytest.raises(ModelError, match=re.escape(message)):
        load_registry(path)
