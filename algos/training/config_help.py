"""Each config key's type, default and doc, read from the schema dataclasses (``train.py --help``).

A field's doc is the string literal written under it in the class body (the convention every schema
dataclass follows); it is read from the source with ``ast``, since Python keeps no field docstrings.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import typing
from functools import cache
from typing import Any


@cache
def field_docs(cls: type) -> dict[str, str]:
    """``{field: doc}`` of the class and its dataclass bases (a subclass's doc wins)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is object:
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        body = tree.body[0].body
        for statement, following in zip(body, body[1:], strict=False):
            if (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
                    and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)):
                docs[statement.target.id] = " ".join(following.value.value.split())
    return docs


def leaf_keys(cls: type, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """``(dotted key, type, default, doc)`` of every leaf field under ``cls``, in declaration order."""
    hints = typing.get_type_hints(cls)
    rows = []
    for item in dataclasses.fields(cls):
        key, kind = prefix + item.name, hints[item.name]
        default = item.default if item.default is not dataclasses.MISSING else item.default_factory()
        if dataclasses.is_dataclass(kind):
            rows += leaf_keys(kind, key + ".")
        else:
            type_name = getattr(kind, "__name__", None) or str(kind).replace("typing.", "")
            rows.append((key, str(type_name), default, field_docs(cls).get(item.name, "")))
    return rows


def help_text(cls: type, width: int = 100) -> str:
    """One block per key: ``key: type = default`` and its doc, indented and wrapped."""
    blocks = []
    for key, kind, default, doc in leaf_keys(cls):
        lines = textwrap.wrap(doc, width - 6) if doc else []
        blocks.append("\n".join([f"  {key}: {kind} = {default!r}", *("      " + line for line in lines)]))
    return "\n".join(blocks)
