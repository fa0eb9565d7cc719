"""Find shell commands built with an unquoted interpolation, by reading the source (nothing is run).

A command is what an operation yields, an item of ``commands=[...]``, the
argument of ``StringCommand(...)``, or what a function named like a command
builder (``*script*``, ``*command*``, ``*_cmd``) returns. Every ``{value}``
in an f-string that makes up such a command must be one of:

- a call that quotes: ``quote(...)`` (shlex's), ``shlex.quote(...)``, or a helper that
  returns quoted shell (:data:`QUOTING`); an ``int(...)``;
  ``" ".join(quote(x) for x in ...)``;
- a module constant written in the code (a literal, or an f-string of such
  constants): code, not input;
- a local name whose every assignment in the function is itself one of
  these (or an f-string made only of them).

Text passed to ``quote(...)`` is not looked into: it is quoted as a whole.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

QUOTING = {"q", "quote", "shlex.quote", "_owned", "place_verified", "int", "len", "probe_command", "dpkg_query_command"}
BUILDER_WORDS = ("script", "command")


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    expression: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {{{self.expression}}} is not quoted"


def _module_constants(tree: ast.Module) -> dict[str, ast.expr]:
    constants: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            constants[node.targets[0].id] = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            constants[node.target.id] = node.value
    return {name: value for name, value in constants.items() if name.isupper()}


def _call_name(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        base = func.value.id + "." if isinstance(func.value, ast.Name) else ""
        return base + func.attr
    return ""


class _Checker:
    def __init__(self, module_name: str, tree: ast.Module) -> None:
        self.module_name = module_name
        self.constants = _module_constants(tree)
        self.imported: dict[str, tuple[str, str]] = {}
        # Helpers of this module that return shell: a call to one is quoted when everything it returns is.
        self.helpers = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
        self._helper_safe: dict[str, bool] = {}
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    if alias.name.isupper():
                        self.imported[alias.asname or alias.name] = (node.module, alias.name)

    def helper_is_safe(self, name: str) -> bool:
        """A function of this module whose every return value is quoted shell (it is scanned as a builder too)."""
        func = self.helpers.get(name)
        if func is None:
            return False
        if name not in self._helper_safe:
            self._helper_safe[name] = False  # recursion guard
            assigned = _assignments(func)
            returns = [n.value for n in ast.walk(func) if isinstance(n, ast.Return) and n.value is not None]
            self._helper_safe[name] = bool(returns) and all(self.safe(r, assigned) for r in returns)
        return self._helper_safe[name]

    def constant_is_safe(self, name: str, seen: frozenset[str] = frozenset()) -> bool:
        """A module constant written in the code (a literal, or an f-string of such constants), not read from input."""
        key = f"{self.module_name}.{name}"
        if key in seen:
            return False
        seen = seen | {key}
        if name in self.imported:
            module, attr = self.imported[name]
            spec = importlib.util.find_spec(module)
            if spec is None or not spec.origin or not spec.origin.endswith(".py"):
                return False
            other = _Checker(module, ast.parse(Path(spec.origin).read_text()))
            return other.constant_is_safe(attr, seen)
        value = self.constants.get(name)
        if value is None:
            return False
        if isinstance(value, ast.Constant):
            return isinstance(value.value, str | int)
        parts: list[ast.expr] = []
        if isinstance(value, ast.JoinedStr):
            parts = [p.value for p in value.values if isinstance(p, ast.FormattedValue)]
        elif isinstance(value, ast.BinOp):
            parts = [value.left, value.right]
        else:
            return False
        return all(self._constant_part(p, seen) for p in parts)

    def _constant_part(self, part: ast.expr, seen: frozenset[str]) -> bool:
        if isinstance(part, ast.Constant):
            return True
        if isinstance(part, ast.Name):
            return self.constant_is_safe(part.id, seen)
        if isinstance(part, ast.Call) and isinstance(part.func, ast.Attribute) and part.func.attr == "join":
            arg = part.args[0] if part.args else None
            value = self.constants.get(arg.id) if isinstance(arg, ast.Name) else None
            return isinstance(value, ast.Tuple | ast.List) and all(isinstance(e, ast.Constant) for e in value.elts)
        return False

    def safe(self, node: ast.expr, assigned: dict[str, list[ast.expr]], seen: frozenset[str] = frozenset()) -> bool:
        if isinstance(node, ast.Constant):
            return True
        if isinstance(node, ast.Call):
            name = _call_name(node)
            if name in QUOTING:
                return True
            if isinstance(node.func, ast.Attribute) and node.func.attr == "join" and node.args:
                arg = node.args[0]
                inner = arg.elt if isinstance(arg, ast.GeneratorExp | ast.ListComp) else arg
                return self.safe(inner, assigned, seen)
            return self.helper_is_safe(name)
        if isinstance(node, ast.JoinedStr):
            return all(
                self.safe(part.value, assigned, seen) for part in node.values if isinstance(part, ast.FormattedValue)
            )
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self.safe(node.left, assigned, seen) and self.safe(node.right, assigned, seen)
        if isinstance(node, ast.IfExp):
            return self.safe(node.body, assigned, seen) and self.safe(node.orelse, assigned, seen)
        if isinstance(node, ast.List | ast.Tuple):
            return all(self.safe(element, assigned, seen) for element in node.elts)
        if isinstance(node, ast.ListComp | ast.GeneratorExp):
            return self.safe(node.elt, assigned, seen)
        if isinstance(node, ast.Name):
            if node.id in seen:
                return False
            if node.id in assigned:
                return all(self.safe(value, assigned, seen | {node.id}) for value in assigned[node.id])
            return self.constant_is_safe(node.id)
        return False

    def unquoted(self, node: ast.expr, assigned: dict[str, list[ast.expr]]) -> Iterator[ast.expr]:
        """Interpolated values in ``node`` that are not provably quoted."""
        if isinstance(node, ast.Call):
            if _call_name(node) in QUOTING:
                return
            if (isinstance(node.func, ast.Attribute) and node.func.attr == "join") or _call_name(
                node
            ) == "StringCommand":
                for arg in node.args:
                    inner = arg.elt if isinstance(arg, ast.GeneratorExp | ast.ListComp) else arg
                    yield from self.unquoted(inner, assigned)
            return
        if isinstance(node, ast.JoinedStr):
            for part in node.values:
                if isinstance(part, ast.FormattedValue) and not self.safe(part.value, assigned):
                    yield part.value
            return
        if isinstance(node, ast.BinOp | ast.IfExp | ast.List | ast.Tuple | ast.Starred):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.expr):
                    yield from self.unquoted(child, assigned)
        if isinstance(node, ast.Name) and node.id in assigned and not self.safe(node, assigned):
            for value in assigned[node.id]:
                yield from self.unquoted(value, assigned)


def _assignments(func: ast.FunctionDef) -> dict[str, list[ast.expr]]:
    assigned: dict[str, list[ast.expr]] = {}
    for node in ast.walk(func):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    assigned.setdefault(target.id, []).append(node.value)
                elif isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                    for name, value in zip(target.elts, node.value.elts, strict=False):
                        if isinstance(name, ast.Name):
                            assigned.setdefault(name.id, []).append(value)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            assigned.setdefault(node.target.id, []).append(node.value)
    return assigned


def _commands(func: ast.FunctionDef) -> Iterator[ast.expr]:
    builder = any(word in func.name for word in BUILDER_WORDS) or func.name.endswith("_cmd")
    for node in ast.walk(func):
        if isinstance(node, ast.Yield | ast.YieldFrom) and node.value is not None:
            yield node.value
        elif isinstance(node, ast.keyword) and node.arg == "commands" and isinstance(node.value, ast.List):
            yield from node.value.elts
        elif isinstance(node, ast.Call) and _call_name(node) == "StringCommand":
            yield from node.args
        elif builder and isinstance(node, ast.Return) and node.value is not None:
            yield node.value


def scan(root: Path, package_root: Path, package: str) -> list[Finding]:
    """Every unquoted interpolation in the command builders of the modules under ``root``."""
    findings: list[Finding] = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(package_root).with_suffix("")
        module_name = ".".join([package, *relative.parts])
        tree = ast.parse(path.read_text(), str(path))
        checker = _Checker(module_name, tree)
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef) or any(
                "contextmanager" in ast.unparse(d) for d in func.decorator_list
            ):
                continue
            assigned = _assignments(func)
            for command in _commands(func):
                for value in checker.unquoted(command, assigned):
                    findings.append(
                        Finding(str(path.relative_to(package_root.parent)), value.lineno, ast.unparse(value))
                    )
    return sorted(set(findings), key=lambda f: (f.path, f.line, f.expression))
