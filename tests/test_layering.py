"""The house's layers (docs/architecture.md), read from the source: every import statement of
every module, including those inside functions and `if TYPE_CHECKING:` blocks, so a module that
reaches across is caught before it runs anywhere.

The order, lowest first; a module imports only from its own layer or below:

    common -> storage -> transport -> protocol, config -> gateway services -> gateway/web

- The composition root (gateway/run.py, and gateway/cli.py which starts it) wires everything
  and may import any layer of the box.
- The faces (gateway/web/) reach the box through the port only: of gateway's services they
  import the port's modules (PORT_MODULES) and nothing else.
- The back office stands beside the box: it imports common/, protocol/ and the shared pure
  modules named in BACK_OFFICE_SHARES, each for a reason written there; never the box's
  services.
- Nothing of the product imports the demo (demo/), the emulated network (labnet/) or disk
  (labdisk/), the tests or the benchmarks.
- No import cycle among the non-test modules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("common", "storage", "transport", "protocol", "config", "gateway", "backoffice")
OUTSIDE_THE_PRODUCT = ("demo", "labnet", "labdisk", "tests", "bench")
BOX_LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"common"}),
    frozenset({"storage"}),
    frozenset({"transport"}),
    frozenset({"protocol", "config"}),
    frozenset({"gateway"}),
    frozenset({"gateway.web"}),
)
COMPOSITION_ROOT = frozenset({"gateway.run", "gateway.run_service", "gateway.cli"})
PORT_MODULES = frozenset(
    {
        "gateway.port",  # the interface itself
        "gateway.caller",  # who calls, and how the box refuses
        "gateway.status_facts",  # the facts of the status document
        "gateway.officer.shift",  # the shift command the face parses (ShiftStart)
        "gateway.officer.reports",  # the report the face's schema is checked against
    }
)
BACK_OFFICE_SHARES: dict[str, str] = {
    "storage.envelope": "the recording key pair: the box encrypts to it, the back office decrypts",
    "storage.reader": "reading and verifying the evidence format the box writes",
    "storage.devicekey": "verifying what a box signed with its device key",
    "storage.audit": "verifying a box's signed audit log (the pure format, not the writer)",
    "storage.audit_io": "the audit appender: the back office's viewing log is an audit log too",
    "storage.audit_head": "a box's signed audit head: the box signs it, the back office holds it",
    "transport.audit_wire": "shipping the audit log: the box sends, the back office parses",
    "storage.sealed": "personal data the box seals to the recording key; the back office opens",
    "storage.errors": "the evidence format's errors, for the decrypt command",
    "transport.pinning": "the SPKI pin format both sides check",
    "transport.blocked_report": "a blocked file's report: the box writes, the back office reads",
    "transport.unpairing": "the back office says a box was unpaired: it writes, the box reads",
    "transport.h3": "HTTP/3 field rules and limits both peers enforce (the pure core)",
    "transport.quic_peer": "aioquic's peer certificate, read the same way on both sides",
    "config.fleet_targets": "the signed fleet repository's target paths and custom metadata",
    "config.release_targets": "releases as targets of the releases role: paths, custom fields",
    "storage.release_seal": "a release sealed to the fleet's release key, opened on the box",
    "config.fleet_schema": "`config lint` checks a document by the rules the boxes apply",
    "config.local": "`config lint --against` reads a box.toml as the box does",
    "storage.holds": "the rule a fleet document's [[holds]] meets, checked by box and admin's tool",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_modules(packages: tuple[str, ...]) -> dict[str, Path]:
    return {
        module_name(path): path
        for package in packages
        for path in sorted((ROOT / package).rglob("*.py"))
    }


ALL_MODULES = source_modules((*PRODUCT, "demo", "labnet", "labdisk", "bench"))


def imports_of(path: Path) -> Iterator[str]:
    """Every module of ours that `path` imports: `from a.b import c` names `a.b.c` when that is a
    module, else `a.b`; relative imports are resolved against the module's package."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield from _ours(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield from _ours(candidate if candidate in ALL_MODULES else base)


def _ours(name: str) -> Iterator[str]:
    top = name.partition(".")[0]
    if top in PRODUCT or top in OUTSIDE_THE_PRODUCT:
        yield name


def layer_of(module: str) -> int:
    """The index of the box layer that holds `module` (its most specific match)."""
    best = -1
    for index, packages in enumerate(BOX_LAYERS):
        if any(module == p or module.startswith(p + ".") for p in packages):
            best = index
    return best


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


BOX_MODULES = sorted(name for name in source_modules(PRODUCT) if not in_package(name, "backoffice"))
BACK_OFFICE_MODULES = sorted(source_modules(("backoffice",)))


@pytest.mark.parametrize("module", BOX_MODULES)
def test_a_box_module_imports_only_its_layer_or_below(module: str) -> None:
    allowed = len(BOX_LAYERS) - 1 if module in COMPOSITION_ROOT else layer_of(module)
    assert allowed >= 0, f"{module} is in no layer: add its package to BOX_LAYERS"
    upward = [
        imported
        for imported in imports_of(ALL_MODULES[module])
        if layer_of(imported) > allowed or in_package(imported, "backoffice")
    ]
    assert upward == [], f"{module} reaches up or across to {upward}"


@pytest.mark.parametrize("module", [m for m in BOX_MODULES if in_package(m, "gateway.web")])
def test_the_faces_reach_the_box_only_through_the_port(module: str) -> None:
    services = [
        imported
        for imported in imports_of(ALL_MODULES[module])
        if in_package(imported, "gateway")
        and not in_package(imported, "gateway.web")
        and imported not in PORT_MODULES
    ]
    assert services == [], f"{module} reaches past the port into {services}"


@pytest.mark.parametrize("module", BACK_OFFICE_MODULES)
def test_the_back_office_shares_only_protocol_and_the_named_modules(module: str) -> None:
    box_side = [
        imported
        for imported in imports_of(ALL_MODULES[module])
        if not in_package(imported, "backoffice")
        and not in_package(imported, "protocol")
        and not in_package(imported, "common")
        and imported not in BACK_OFFICE_SHARES
    ]
    assert box_side == [], f"{module} imports the box's {box_side}"


def test_every_shared_module_exists_and_is_used() -> None:
    missing = sorted(set(BACK_OFFICE_SHARES) - set(ALL_MODULES))
    assert missing == []
    used = {i for m in BACK_OFFICE_MODULES for i in imports_of(ALL_MODULES[m])}
    assert sorted(set(BACK_OFFICE_SHARES) - used) == [], "drop what the back office no longer uses"


@pytest.mark.parametrize("module", sorted(source_modules(("protocol",))))
def test_the_shared_protocol_imports_neither_side(module: str) -> None:
    sides = [
        imported
        for imported in imports_of(ALL_MODULES[module])
        if imported.partition(".")[0] in {"backoffice", "gateway", "config", "storage"}
    ]
    assert sides == []


@pytest.mark.parametrize("module", sorted(source_modules(PRODUCT)))
def test_the_product_imports_no_demo_lab_test_or_benchmark(module: str) -> None:
    outside = [
        imported
        for imported in imports_of(ALL_MODULES[module])
        if imported.partition(".")[0] in OUTSIDE_THE_PRODUCT
    ]
    assert outside == []


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    cycles: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            advanced = False
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = counter
                    counter += 1
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    advanced = True
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_the_modules() -> None:
    graph = {
        name: {i for i in imports_of(path) if i in ALL_MODULES and i != name}
        for name, path in ALL_MODULES.items()
    }
    assert import_cycles(graph) == []
