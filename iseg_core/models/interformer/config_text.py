"""Reading the configuration that mmcv-trained checkpoints carry as Python source (``meta["config"]``).

mmcv writes ``cfg.pretty_text``: assignments of literals, ``dict(key=value, ...)`` calls, lists, tuples and
names of earlier assignments. This module reads exactly that subset from the syntax tree; it never runs the
text. Anything else (a call of another function, an attribute, an operator) is kept as an
:class:`Unreadable` marker, so a foreign expression cannot do anything and cannot pass for a value.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any, Dict


@dataclass(frozen=True)
class Unreadable:
    """An expression of the config text this reader does not evaluate (its source, for messages)."""

    source: str


def _value(node: ast.AST, names: Dict[str, Any], text: str) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List)):
        items = [_value(e, names, text) for e in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    if isinstance(node, ast.Dict):
        return {_value(k, names, text): _value(v, names, text) for k, v in zip(node.keys, node.values)
                if k is not None}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        return {kw.arg: _value(kw.value, names, text) for kw in node.keywords if kw.arg is not None}
    if isinstance(node, ast.Name):
        return names.get(node.id, Unreadable(node.id))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _value(node.operand, names, text)
        if isinstance(inner, (int, float)) and not isinstance(inner, bool):
            return -inner if isinstance(node.op, ast.USub) else inner
    return Unreadable(ast.get_source_segment(text, node) or type(node).__name__)


def read_config_text(text: str) -> Dict[str, Any]:
    """``{name: value}`` of the top-level assignments in ``text``; raises ValueError when it is not Python."""
    try:
        tree = ast.parse(text, mode="exec")
    except SyntaxError as exc:
        raise ValueError(f"the stored config is not readable Python ({exc.msg}, line {exc.lineno})") from None
    names: Dict[str, Any] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            names[stmt.targets[0].id] = _value(stmt.value, names, text)
    return names
