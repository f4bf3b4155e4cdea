"""The layout holds: imports run one way, configuration is read in one place, nothing is hidden.

`orchestration`, `webhooks` -> `sensors` -> `assets/<domain>` -> `resources`; a domain reads
another only through its `rules.py` or `store.py`; only `resources/settings.py` reads the
environment; no string registries of modules; no function-local imports of our own modules
outside the entry points unless marked as deliberate (kept lazy to keep a heavy library out).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("assets", "resources", "sensors", "orchestration", "webhooks", "sandbox")
FORBIDDEN = {
    "resources": {"assets", "sensors", "orchestration", "webhooks"},
    "assets": {"sensors", "orchestration", "webhooks"},
    "sensors": {"orchestration", "webhooks"},
    "webhooks": {"orchestration"},
}
SETTINGS_MODULE = "resources/settings.py"
# Options such as `--token-env VAR` read the variable the user names: the CLI boundary.
ENVIRON_READERS_ALLOWED = {
    "orchestration/commands/tickets.py",
    "orchestration/commands/feedback.py",
}
LAZY_MARK = "on purpose"


def modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def imported_modules(tree: ast.AST) -> list[tuple[ast.stmt, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node, node.module))
            # `from assets.email import defs` names the module assets.email.defs
            found.extend((node, f"{node.module}.{alias.name}") for alias in node.names)
    return found


def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


@pytest.mark.parametrize("path", modules(), ids=rel)
def test_imports_run_one_way(path: Path) -> None:
    layer = rel(path).split("/")[0]
    forbidden = FORBIDDEN.get(layer, set())
    bad = sorted(
        {name for _, name in imported_modules(parsed(path)) if name.split(".")[0] in forbidden}
    )
    assert not bad, f"{rel(path)} ({layer}) imports {bad}"


@pytest.mark.parametrize("path", [p for p in modules() if rel(p).startswith("assets/")], ids=rel)
def test_a_domain_reads_another_only_through_rules_or_store(path: Path) -> None:
    own = rel(path).split("/")[1]
    bad = []
    for _, name in imported_modules(parsed(path)):
        parts = name.split(".")
        if parts[0] != "assets" or len(parts) < 2 or parts[1] == own:
            continue
        if len(parts) == 2:  # `from assets.email import rules` is checked by its full name
            continue
        if parts[2] not in ("rules", "store"):
            bad.append(name)
    assert not bad, f"{rel(path)} reaches into another domain: {sorted(set(bad))}"


def reads_environ(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in ("environ", "getenv", "environb")
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        ):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            if any(a.name in ("environ", "getenv") for a in node.names):
                lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("path", modules(), ids=rel)
def test_only_the_settings_module_reads_the_environment(path: Path) -> None:
    name = rel(path)
    if name == SETTINGS_MODULE or name in ENVIRON_READERS_ALLOWED:
        return
    lines = reads_environ(parsed(path))
    assert not lines, f"{name} touches os.environ at lines {lines}; use resources.settings"


def test_the_allowed_environment_readers_read_only_what_the_user_names() -> None:
    for name in ENVIRON_READERS_ALLOWED:
        text = (ROOT / name).read_text()
        assert "os.environ" in text, f"{name} no longer needs its exception; remove it"
        assert "SUPPORTFLOW_" not in "".join(
            line for line in text.splitlines() if "os.environ" in line
        ), name


@pytest.mark.parametrize("path", modules(), ids=rel)
def test_no_string_registries_of_modules(path: Path) -> None:
    calls = [
        node.lineno
        for node in ast.walk(parsed(path))
        if isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__"))
        )
    ]
    assert not calls, f"{rel(path)} imports modules by name at lines {calls}"


@pytest.mark.parametrize(
    "path", [p for p in modules() if not rel(p).startswith("orchestration/")], ids=rel
)
def test_no_hidden_imports_of_our_own_modules(path: Path) -> None:
    """Outside the entry points (`orchestration/`, which keeps quick commands quick), an import
    of our own modules inside a function must say why it is lazy: a comment above it saying it
    is there on purpose (to keep a heavy library out of processes that do not need it)."""
    source = path.read_text().splitlines()
    tree = parsed(path)
    bad = []
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            if not any((n or "").split(".")[0] in PACKAGES for n in names):
                continue
            above = " ".join(source[max(0, node.lineno - 4) : node.lineno - 1]).lower()
            if LAZY_MARK not in above:
                bad.append(node.lineno)
    assert not bad, f"{rel(path)}: function-local imports of our modules at lines {bad}"
