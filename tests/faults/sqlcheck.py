"""A static check that no SQL is built by formatting values into a string.

SQL text may be a literal, a psycopg ``sql.SQL(...)`` composition with
``sql.Identifier``/``sql.Literal`` parts, or a literal formatted with *module
constants* only (``f"... WHERE {_KEY}"`` where ``_KEY`` is itself a literal).
Anything else interpolated into SQL text — a local variable, an argument, an
attribute, a call — is reported, whether the string is built with an f-string,
``%``, ``.format()`` or ``+``, and whether or not it goes to ``execute`` at once.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

#: SQL statement shapes (a keyword alone, like "from", is too common in messages).
SQL_WORDS = re.compile(
    r"\bSELECT\b.*\bFROM\b|\bINSERT\s+INTO\b|\bDELETE\s+FROM\b|\bUPDATE\b.*\bSET\b"
    r"|\b(CREATE|DROP|ALTER)\s+(TEMP\s+|TEMPORARY\s+)?(TABLE|SCHEMA|INDEX|ROLE|VIEW|EXTENSION)\b"
    r"|\bTRUNCATE\b|\bCOPY\b.*\b(FROM|TO)\b|\bON\s+CONFLICT\b",
    re.IGNORECASE | re.DOTALL,
)
#: Calls whose text is shown, not run: SQL in a message to the user is not a query.
SHOWING = {"print", "debug", "info", "warning", "error", "exception", "write", "echo"}


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def module_constants(tree: ast.Module) -> set[str]:
    """Module-level names bound once to a literal string (or a tuple/f-string of them)."""
    assigned: dict[str, list[ast.expr]] = {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        for target in targets:
            if isinstance(target, ast.Name):
                assigned.setdefault(target.id, []).append(node.value)
    constants: set[str] = set()
    changed = True
    while changed:  # constants made of constants (f"... {_KEY}")
        changed = False
        for name, values in assigned.items():
            if name in constants or len(values) != 1 or not name.lstrip("_").isupper():
                continue
            if is_constant(values[0], constants):
                constants.add(name)
                changed = True
    return constants


def is_constant(node: ast.expr, constants: set[str]) -> bool:
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.Name):
        return node.id in constants
    if isinstance(node, ast.Tuple | ast.List):
        return all(is_constant(e, constants) for e in node.elts)
    if isinstance(node, ast.JoinedStr):
        return all(
            is_constant(v.value if isinstance(v, ast.FormattedValue) else v, constants)
            for v in node.values
        )
    if isinstance(node, ast.BinOp):
        return is_constant(node.left, constants) and is_constant(node.right, constants)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        # ", ".join(TABLES) or "...".format(CONSTANT): constant in, constant out.
        return (
            is_constant(node.func.value, constants)
            and all(is_constant(a, constants) for a in node.args)
            and all(is_constant(k.value, constants) for k in node.keywords)
        )
    return False


def literal_text(node: ast.expr) -> str:
    """The literal parts of a string expression (to see whether it is SQL)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return " ".join(literal_text(v) for v in node.values)
    if isinstance(node, ast.BinOp):
        return literal_text(node.left) + " " + literal_text(node.right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return literal_text(node.func.value)
    return ""


def built_string(node: ast.expr) -> bool:
    """An f-string, ``a % b``, ``a + b`` or ``"...".format(...)``: text built at run time."""
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(v, ast.FormattedValue) for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
        return True
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "format"
        and not is_sql_composition(node.func.value)
    )


def is_sql_composition(node: ast.expr) -> bool:
    """``sql.SQL("...")`` (psycopg's safe composition), whose ``.format`` is fine."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute | ast.Name)
        and getattr(node.func, "attr", getattr(node.func, "id", None)) == "SQL"
    )


def builds_sql(node: ast.expr, constants: set[str]) -> bool:
    """Built at run time, looks like SQL, and not from module constants alone."""
    return (
        built_string(node)
        and bool(SQL_WORDS.search(literal_text(node)))
        and not is_constant(node, constants)
    )


def check_source(source: str, path: str = "<string>") -> list[Finding]:
    tree = ast.parse(source)
    constants = module_constants(tree)
    shown = {
        id(arg)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and called_name(node) in SHOWING
        for arg in node.args
    }
    findings: list[Finding] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.expr) and id(node) not in shown and builds_sql(node, constants):
            findings.append(Finding(path, node.lineno, "SQL text built from a non-constant"))
        if (
            isinstance(node, ast.Call)
            and called_name(node) == "SQL"
            and node.args
            and not is_constant(node.args[0], constants)
        ):
            findings.append(Finding(path, node.lineno, "sql.SQL() of a non-constant"))
    return sorted(set(findings), key=lambda f: (f.path, f.line))


def called_name(node: ast.Call) -> str | None:
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return None


def check_tree(root: Path, folders: tuple[str, ...]) -> list[Finding]:
    findings: list[Finding] = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            if "target" in path.parts:
                continue
            findings += check_source(path.read_text(), str(path.relative_to(root)))
    return findings
