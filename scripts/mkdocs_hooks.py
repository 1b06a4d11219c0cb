"""mkdocs hooks: the API reference fails the strict build when a documented name has no
docstring.

mkdocstrings renders a public function or class without a docstring as a bare signature and
says nothing. This hook reads each ``::: identifier`` block of a page (and its ``members:``
option, when it narrows them), loads the same objects with griffe (what mkdocstrings renders
from), and logs a warning, which ``mkdocs build --strict`` turns into a failure, for the
object and every public function, method and property it shows that has no docstring.
Attributes are documented in their class's ``Attributes:`` section and are not checked.
"""

from __future__ import annotations

import logging
import re
from functools import cache
from typing import Any

import griffe

log = logging.getLogger("mkdocs.plugins.hubbub_docstrings")

BLOCK = re.compile(r"^::: *(?P<ident>[\w.]+)[ \t]*\n(?P<options>(?:[ \t]+.*\n)*)", re.M)
MEMBERS = re.compile(r"^\s+members:\s*(?P<value>.+)$", re.M)


@cache
def _package(name: str) -> griffe.Object:
    loaded = griffe.load(name, search_paths=["."])
    assert isinstance(loaded, griffe.Object)
    return loaded


def _resolve(ident: str) -> griffe.Object:
    root, _, rest = ident.partition(".")
    found: Any = _package(root)
    if rest:
        found = found[rest]
    while isinstance(found, griffe.Alias):
        found = found.final_target
    return found  # type: ignore[no-any-return]


def _members_option(options: str) -> list[str] | bool | None:
    """The block's ``members:``: a list of names, False (none), or None (all public)."""
    match = MEMBERS.search(options)
    if match is None:
        return None
    value = match.group("value").strip()
    if value.lower() == "false":
        return False
    return [name.strip() for name in value.strip("[]").split(",") if name.strip()]


def _shown(obj: griffe.Object, only: list[str] | bool | None) -> list[griffe.Object]:
    """What the block renders below ``obj``: functions, properties and classes (public)."""
    if only is False:
        return []
    found = []
    for name, member in obj.members.items():
        if isinstance(only, list):
            if name not in only:
                continue
        elif name.startswith("_") or member.is_alias:
            continue
        if isinstance(member, griffe.Alias):
            member = member.final_target
        if member.is_function or member.is_class or "property" in member.labels:
            found.append(member)
    return found


def _undocumented(obj: griffe.Object, only: list[str] | bool | None) -> list[str]:
    missing = [] if obj.docstring else [obj.path]
    for member in _shown(obj, only):
        if not member.docstring:
            missing.append(member.path)
        if member.is_class:  # its own members render below it
            missing.extend(path for path in _undocumented(member, None) if path != member.path)
    return missing


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Warn (a failure under --strict) about each rendered public name without a docstring."""
    for block in BLOCK.finditer(markdown):
        ident = block.group("ident")
        try:
            obj = _resolve(ident)
        except (KeyError, ImportError, griffe.AliasResolutionError) as exc:
            log.warning("%s: cannot find %s: %s", page.file.src_path, ident, exc)
            continue
        for path in _undocumented(obj, _members_option(block.group("options"))):
            log.warning("%s: %s has no docstring (it renders as a bare signature)",
                        page.file.src_path, path)
    return markdown
