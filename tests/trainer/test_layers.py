"""The floors of the house, checked on the source: which package may import which (docs/ARCHITECTURE.md). Here
(with the trainer's tests, on Python 3.10+) because it reads the trainer's source as well as the agent's.

Every ``import`` and ``from ... import`` of every module is read with ``ast`` (imports inside functions and
under ``TYPE_CHECKING`` count too: an arrow is an arrow), and each rule below names the modules it forbids.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(source: str, package: str) -> Iterator[str]:
    """Every module (and ``module.name``) the source imports; ``package``: where relative imports start."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _graph(top: str) -> Dict[str, Set[str]]:
    graph = {}
    for path in sorted((ROOT / top).rglob("*.py")):
        module = _module(path)
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        graph[module] = set(_imports(path.read_text(encoding="utf-8"), package))
    return graph


def _within(name: str, packages: Tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


# (who, may not import, why)
RULES: List[Tuple[Tuple[str, ...], Tuple[str, ...], str]] = [
    (("agent",), ("trainer", "torch", "ultralytics"), "the edge install never pulls the trainer or torch"),
    (
        ("agent.core",),
        ("agent.app", "agent.daemon", "agent.engine", "agent.sources", "agent.link", "agent.spool", "agent.ota"),
        "the pure core sits below every adapter",
    ),
    (("agent.box_page", "agent.web"), ("agent.app", "agent.daemon"), "the pages sit below the daemon's services"),
    (("agent.web",), ("agent.box_page", "trainer"), "the web layer serves both pages and knows neither"),
    (
        ("agent.app", "agent.box_page", "agent.web", "agent.observability", "agent.ota", "agent.link"),
        ("agent.daemon",),
        "nothing below the top floor names the daemon",
    ),
    (
        ("trainer.ingest", "trainer.store", "trainer.labelling", "trainer.rounds", "trainer.rollout"),
        ("trainer.commands", "trainer.settings", "trainer.cli"),
        "the command line and trainer.yaml are wired on the top floor",
    ),
    (
        ("trainer.release", "trainer.devices", "trainer.fleet_pages"),
        ("trainer.commands", "trainer.settings", "trainer.cli"),
        "the command line and trainer.yaml are wired on the top floor",
    ),
    (("trainer.ingest",), ("trainer.rounds",), "the rounds policy thread is handed to the ingest by `serve`"),
]


@pytest.mark.parametrize(("who", "forbidden", "why"), RULES, ids=[r[2] + ": " + ",".join(r[0]) for r in RULES])
def test_no_import_runs_against_the_floors(who: Tuple[str, ...], forbidden: Tuple[str, ...], why: str) -> None:
    graph = {**_graph("agent"), **_graph("trainer")}
    arrows = sorted(
        f"{module} imports {name}"
        for module, names in graph.items()
        if _within(module, who)
        for name in names
        if _within(name, forbidden) and not _within(name, who)
    )
    assert arrows == [], why


def test_the_rules_see_the_imports_they_forbid() -> None:
    """A rule that could never fire would pass for ever: the reader finds every form of import."""
    source = (
        "import agent.daemon\nfrom agent.app import live\nfrom typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from agent.daemon.assemble import Parts\n"
        "def late():\n    import trainer.commands\n"
        "from .views import page_state\nfrom .. import threads\n"
    )
    found = set(_imports(source, "agent.box_page"))
    assert {"agent.daemon", "agent.app.live", "agent.daemon.assemble.Parts", "trainer.commands"} <= found
    assert {"agent.box_page.views.page_state", "agent.threads"} <= found
