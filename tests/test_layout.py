"""The package's layout: which part may import which, what ships, how it starts."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

import libdoctor
from libdoctor.rules import available_rules

PACKAGE = Path(libdoctor.__file__).resolve().parent  # the source tree, or site-packages when installed
SUB_PACKAGES = ("loader", "gpu", "rules", "repair", "daemon", "verdicts")
BASICS = {"errors", "logs", "files", "__init__"}
# What each part may import, besides itself and BASICS (docs/layout.rst says the same).
MAY_IMPORT: dict[str, set[str]] = {
    "loader": set(),
    "gpu": {"loader", "targets"},
    "rules": {"loader", "gpu", "targets"},
    "repair": {"loader", "gpu", "rules", "targets"},
    "daemon": {"loader", "gpu", "rules", "repair", "scan", "targets"},
    "verdicts": {"loader"},
    "targets": {"loader"},
    "scan": {"loader", "gpu", "rules", "repair", "targets"},
}
# The renderer decides nothing: it reads the diagnosis (rules.base, the facts) and the loader's search records.
REPORT_MAY_IMPORT = {"libdoctor", "libdoctor.__version__", "libdoctor.loader.resolver", "libdoctor.rules.base",
                     "libdoctor.rules.causes",
                     "libdoctor.rules.facts"}


def part_of(module: str) -> str:
    """``libdoctor.loader.resolver`` -> ``loader``; ``libdoctor.scan`` -> ``scan``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    return ".".join(relative.parts)


def imported_modules(path: Path) -> set[str]:
    """Every libdoctor module ``path`` imports, at module level or inside functions."""
    own = module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("libdoctor"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("libdoctor"):
                continue
            found.add(target)
            if not node.module:  # from . import errors
                found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def package_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_import_walker_sees_relative_and_nested_imports(tmp_path: Path) -> None:
    resolver = PACKAGE / "loader" / "resolver.py"
    assert "libdoctor.loader.elffacts" in imported_modules(resolver)
    cli_imports = imported_modules(PACKAGE / "cli.py")
    assert "libdoctor.repair.fix" in cli_imports  # imported inside a function
    assert "libdoctor.errors" in imported_modules(PACKAGE / "loader" / "factstore.py")  # from .. import errors


@pytest.mark.parametrize("part", SUB_PACKAGES)
def test_each_part_imports_only_what_it_may(part: str) -> None:
    allowed = MAY_IMPORT[part] | BASICS | {part}
    offenders = []
    for path in sorted((PACKAGE / part).rglob("*.py")):
        for target in imported_modules(path):
            if target != "libdoctor" and part_of(target) not in allowed:
                offenders.append(f"{module_name(path)} imports {target}")
    assert not offenders, offenders


@pytest.mark.parametrize("module", ["targets", "scan"])
def test_each_top_level_pipeline_module_imports_only_what_it_may(module: str) -> None:
    allowed = MAY_IMPORT[module] | BASICS | {module}
    offenders = [t for t in imported_modules(PACKAGE / f"{module}.py")
                 if t != "libdoctor" and part_of(t) not in allowed]
    assert not offenders, offenders


def test_the_report_only_renders() -> None:
    """report.py imports no judgement (gpu/, the rule modules, repair/, the pipeline) and defines no decision."""
    imported = imported_modules(PACKAGE / "report.py")
    assert imported <= REPORT_MAY_IMPORT, sorted(imported - REPORT_MAY_IMPORT)
    tree = ast.parse((PACKAGE / "report.py").read_text(encoding="utf-8"))
    defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    decisions = {"causes_of", "install_hints", "next_step_of", "verdict_line", "fix_command", "link_maker",
                 "stale_conf_folders", "aimed"}
    assert not defined & decisions, sorted(defined & decisions)


def test_rules_never_import_the_pipeline() -> None:
    for path in sorted((PACKAGE / "rules").rglob("*.py")):
        hits = {t for t in imported_modules(path) if part_of(t) in ("scan", "report", "preflight", "cli", "repair")}
        assert not hits, f"{module_name(path)} imports {sorted(hits)}"


def test_the_loader_model_imports_nothing_above_it() -> None:
    forbidden = {"gpu", "repair", "daemon", "rules", "scan", "targets", "report", "preflight", "cli"}
    for path in sorted((PACKAGE / "loader").rglob("*.py")):
        hits = {t for t in imported_modules(path) if part_of(t) in forbidden}
        assert not hits, f"{module_name(path)} imports {sorted(hits)}"


def test_top_level_holds_at_most_ten_modules() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "_version.py")  # _version.py: generated
    assert len(top) <= 10, top
    for part in SUB_PACKAGES:
        assert (PACKAGE / part / "__init__.py").is_file()


def test_python_dash_m_libdoctor_runs_the_cli(tmp_path: Path) -> None:
    environ = dict(os.environ, PYTHONPATH=str(PACKAGE.parent), NO_COLOR="1")
    done = subprocess.run([sys.executable, "-m", "libdoctor", "--help"], capture_output=True, text=True,
                          env=environ, cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Usage: libdoctor" in done.stdout and "scan" in done.stdout


def test_an_outside_plugin_rule_loads_through_the_entry_point_group(tmp_path: Path) -> None:
    (tmp_path / "extra_rule.py").write_text(textwrap.dedent("""
        from libdoctor.rules.base import RuleResult

        class ExtraRule:
            id = "extra-rule"
            description = "a rule from another package"

            def check(self, ctx):
                return RuleResult()

        RULE = ExtraRule()
    """))
    dist = tmp_path / "extra_rule-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: extra-rule\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[libdoctor.rules]\nextra-rule = extra_rule:RULE\n")
    environ = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{PACKAGE.parent}", NO_COLOR="1")
    done = subprocess.run([sys.executable, "-m", "libdoctor", "rules"], capture_output=True, text=True,
                          env=environ, cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "extra-rule" in done.stdout
    assert "extra-rule" not in {rule.id for rule in available_rules()}  # not on this process's path


def test_the_wheel_ships_the_tables_and_units_from_their_folders(tmp_path: Path) -> None:
    if not (PACKAGE.parent / "setup.cfg").is_file():
        pytest.skip("libdoctor is installed, not a source tree: nothing to build")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path),
                            str(PACKAGE.parent)], capture_output=True, text=True, timeout=300)
    if built.returncode != 0 and "Could not find a version that satisfies" in built.stderr:
        pytest.skip("the build backend cannot be fetched from the package index")
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("libdoctor-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for table in ("cuda_sonames.csv", "cuda_min_driver.csv", "tf_build_configs.csv"):
        assert f"libdoctor/gpu/data/{table}" in names
    for unit in ("libdoctor-scan.service", "libdoctor-scan.timer", "libdoctor-watch.service"):
        assert f"libdoctor/daemon/data/systemd/{unit}" in names
    for schema in ("scan", "fix", "preflight", "ps", "explain", "rules", "lines", "runs"):
        assert f"libdoctor/schemas/{schema}.json" in names
    for part in SUB_PACKAGES:
        assert f"libdoctor/{part}/__init__.py" in names
    assert not any(name.startswith(("tests/", "benchmarks/")) for name in names)
