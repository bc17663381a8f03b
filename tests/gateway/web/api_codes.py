"""Every code the box's API can put in front of the officer, found in the code itself (not a hand
list), for the translation checks (test_refusal_codes.py, test_i18n.py):

- `error_codes()`: the `error` member of every refusal: the literal code of each
  `Refused(kind, "code", ...)` (services behind the port), `ApiError(status, "code", ...)` and
  `error_response(status, "code", ...)` (the faces), `invalid(...)` ("invalid"), and the access
  layer's table of aiohttp's own errors (`_CODES`). A call whose code is not a literal is
  reported by `unliteral_calls()`, so no code can slip past the scan.
- `invalid_fields()`: the `field` member of a 422 `invalid`: the literal first argument of
  `invalid(...)`, the literal `field=` of `Refused(...)` and the member `text_member(body,
  "name", ...)` and the report form's `_absent` / `_code` check (FIELD_POSITION); a module's
  own string constant (`CORRECTION_MEMBER = "correction_reason"`) counts as its literal.
- `wait_reasons()`, `pairing_reasons()`, `bundle_reasons()`: the reason codes the status
  document, a pairing refusal and a bundle refusal carry, from the modules that decide them.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCANNED = (ROOT / "gateway",)
# Callables whose code is the argument at this position (0-based).
CODE_POSITION = {"Refused": 1, "ApiError": 1, "error_response": 1}
# Functions that pass a code through (their code argument is a parameter or a refusal's).
FORWARDERS = frozenset({"api_error", "error_response", "json_errors"})
# Functions whose `field` is their parameter, or a member the route does not know (a client bug
# the page shows with the general "invalid" text).
FIELD_FORWARDERS = frozenset(
    {
        "invalid",
        "text_member",
        "reject_unknown",
        "_refuse_unknown",
        "_absent",
        "_code",
        "parse_report",
        "parse_hold_body",
    }
)
# Callables whose argument at this position (0-based) is the `field` of the `invalid` they raise.
FIELD_POSITION = {"invalid": 0, "text_member": 1, "_absent": 1, "_code": 1}


@dataclass(frozen=True, slots=True)
class Found:
    codes: frozenset[str]
    fields: frozenset[str]
    unliteral: tuple[str, ...]


def _name_of(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _literal(node: ast.expr | None, constants: dict[str, str] | None = None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name) and constants is not None:
        return constants.get(node.id)
    return None


def _module_constants(tree: ast.Module) -> dict[str, str]:
    """The module's top-level `NAME = "text"` assignments."""
    constants: dict[str, str] = {}
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and (text := _literal(statement.value)):
            for target in statement.targets:
                if isinstance(target, ast.Name):
                    constants[target.id] = text
    return constants


class _Scan(ast.NodeVisitor):
    def __init__(self, path: Path, constants: dict[str, str]) -> None:
        self.path = path
        self.constants = constants
        self.codes: set[str] = set()
        self.fields: set[str] = set()
        self.unliteral: list[str] = []
        self._functions: list[str] = []

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._functions.append(node.name)
        self.generic_visit(node)
        self._functions.pop()

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._functions.append(node.name)
        self.generic_visit(node)
        self._functions.pop()

    def visit_Assign(self, node: ast.Assign) -> None:
        targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
        if "_CODES" in targets and isinstance(node.value, ast.Dict):
            for value in node.value.values:
                if isinstance(value, ast.Tuple) and (code := _literal(value.elts[0])):
                    self.codes.add(code)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        name = _name_of(node)
        if name == "invalid" and node.args:
            self.codes.add("invalid")
        field_position = FIELD_POSITION.get(name)
        if field_position is not None and len(node.args) > field_position:
            self._field(node.args[field_position], node)  # refuses `invalid` naming that member
        position = CODE_POSITION.get(name)
        if position is not None and len(node.args) > position:
            code = _literal(node.args[position])
            if code is not None:
                self.codes.add(code)
            elif not set(self._functions) & FORWARDERS:
                self.unliteral.append(f"{self.path.relative_to(ROOT)}:{node.lineno} {name}")
        if name == "Refused":
            for keyword in node.keywords:
                if keyword.arg == "field":
                    self._field(keyword.value, node)
        self.generic_visit(node)

    def _field(self, node: ast.expr, call: ast.Call) -> None:
        field = _literal(node, self.constants)
        if field is not None:
            self.fields.add(field)
        elif not set(self._functions) & FIELD_FORWARDERS:
            self.unliteral.append(f"{self.path.relative_to(ROOT)}:{call.lineno} field")


@functools.cache
def scan() -> Found:
    codes: set[str] = set()
    fields: set[str] = set()
    unliteral: list[str] = []
    for root in SCANNED:
        for path in sorted(root.rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            visitor = _Scan(path, _module_constants(tree))
            visitor.visit(tree)
            codes |= visitor.codes
            fields |= visitor.fields
            unliteral += visitor.unliteral
    return Found(frozenset(codes), frozenset(fields), tuple(unliteral))


def error_codes() -> frozenset[str]:
    return scan().codes


def invalid_fields() -> frozenset[str]:
    return scan().fields


def unliteral_calls() -> tuple[str, ...]:
    return scan().unliteral
