"""The dependency arrows between the layers, checked on the source.

`pdu` <- `session` <- send loop <- daemon: the codec and the session's protocol core are pure
(no event loop, sockets, threads or storage), the queue knows nothing of SMPP sessions, only the
queue touches SQLite, the fake SMSC is built on the codec alone, and only the CLI's `run` builds
the daemon. Imports inside functions count as much as those at the top of a module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# What a pure core must not reach for: sockets, the event loop, threads, processes, storage.
IO_MODULES = frozenset(
    {"asyncio", "socket", "ssl", "selectors", "threading", "sqlite3", "aiosqlite", "subprocess"}
)
# Leaf helpers any layer may use: the error root, the record decorator, the histogram, the
# path lock and YAML errors without secrets.
LEAVES = ("smppd.errors", "smppd.record", "smppd.histogram", "smppd.pathlock", "smppd.yamlproblem")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(package: str) -> list[Path]:
    base = ROOT.joinpath(*package.split("."))
    if base.with_suffix(".py").is_file():
        return [base.with_suffix(".py")]
    return sorted(base.rglob("*.py"))


def _package_of(path: Path) -> str:
    name = _module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _imports(path: Path, package: str | None = None) -> Iterator[tuple[int, str]]:
    """(line, name) of every import in `path`: `import a.b` gives a.b, `from a import b` gives
    a.b (b may be a module or a name in a); relative imports are resolved against `package`."""
    if package is None:
        package = _package_of(path)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{module}" if module else base
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}"


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _violations(package: str, *, allowed_own: tuple[str, ...], io: bool) -> list[str]:
    found = []
    for path in _modules(package):
        for line, name in _imports(path):
            top = name.split(".")[0]
            own = top in ("smppd", "tools")
            if (own and not _within(name, allowed_own)) or (not io and top in IO_MODULES):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return found


@pytest.mark.parametrize(
    ("package", "allowed_own", "io"),
    [
        # The codec: bytes and values in, bytes and values out.
        ("smppd.pdu", ("smppd.pdu", *LEAVES), False),
        # One bind's protocol state, sans-IO: bytes and `now` in, events and bytes out.
        ("smppd.session", ("smppd.session", "smppd.pdu", "smppd.ratelimit", *LEAVES), False),
        # The durable store: domain words in, no SMPP sessions, send loop or API.
        ("smppd.queue", ("smppd.queue", *LEAVES), True),
        # The fake SMSC speaks through the codec only (and shares the collector settings).
        ("tools.fake_smsc", ("tools.fake_smsc", "smppd.pdu", "smppd.gctune", *LEAVES), True),
    ],
)
def test_layer_imports_only_what_it_may(
    package: str, allowed_own: tuple[str, ...], *, io: bool
) -> None:
    """Each layer imports only the layers below it (and, for pure cores, no I/O modules)."""
    assert _modules(package), f"no modules found for {package}"
    assert _violations(package, allowed_own=allowed_own, io=io) == []


def test_only_the_queue_touches_sqlite() -> None:
    """Nothing outside smppd.queue imports sqlite3 or aiosqlite (nothing else writes SQL)."""
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in [*_modules("smppd"), *_modules("tools")]
        if not _within(_module_name(path), ("smppd.queue",))
        for line, module in _imports(path)
        if module.split(".")[0] in ("sqlite3", "aiosqlite")
    ]
    assert offenders == []


def test_only_the_cli_builds_the_daemon() -> None:
    """smppd.daemon, the one composition root, is imported by nothing but the CLI's `run`."""
    importers = {
        _module_name(path)
        for path in [*_modules("smppd"), *_modules("tools")]
        for _, module in _imports(path)
        if _within(module, ("smppd.daemon",))
    }
    # cli.py loads it by name (importlib), so it does not show up as an import statement.
    assert importers <= {"smppd.cli"}
    assert 'import_module("smppd.daemon")' in (ROOT / "smppd" / "cli.py").read_text()


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The import walker finds imports inside functions and resolves relative ones."""
    source = tmp_path / "probe.py"
    source.write_text(
        "from . import sibling\n"
        "def late():\n"
        "    import asyncio\n"
        "    from smppd.queue import sqlite\n"
    )
    names = [name for _, name in _imports(source, package="smppd.probe")]
    assert "asyncio" in names
    assert "smppd.queue.sqlite" in names
    assert _within("smppd.queue.sqlite", ("smppd.queue",))
    assert not _within("smppd.queue_extra", ("smppd.queue",))
    assert "smppd.probe.sibling" in names
