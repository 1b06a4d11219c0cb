"""Write the table of every setting into docs/configuration.md, from hubbub/settings.py.

    python scripts/configuration_table.py          # rewrite the table in place
    python scripts/configuration_table.py --check  # exit 1 if the page is out of date

The rows come from the code, so the page cannot drift from it: one per field of
``Settings`` and of ``Limits``, with the ``HUBBUB_*`` variable that sets it
(``settings.environment_variable``), its default (the dataclasses' own defaults), the form
the variable takes (from the field's type), and what it does (the ``Args:`` of ``Hub``'s
docstring, the ``Attributes:`` of ``Limits``'). ``tests/docs/test_site.py`` runs the check.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hubbub.hub import Hub  # noqa: E402 (after the path, so that this checkout is read)
from hubbub.settings import Limits, Settings, environment_variable  # noqa: E402

PAGE = ROOT / "docs" / "configuration.md"
START = "<!-- settings table: written by scripts/configuration_table.py -->"
END = "<!-- end of settings table -->"
SKIPPED = {"sources", "limits"}  # bookkeeping, and the group whose fields get rows

# Defaults that the code computes when it builds the settings, not a constant.
COMPUTED = {
    "broker": "`hubbub.db` in the folder of the module that creates the Hub",
    "results": "the broker, when it can keep results (SQLite, Redis, memory); else none",
}
FORMS = {  # how a variable's text is read, by the field's type
    "float": "seconds",
    "int": "a whole number",
    "bool": "`1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`",
    "str": "text",
    "str | None": "a URL, or `none`",
    "frozenset[str]": "comma-separated names",
    "tuple[tuple[str, str], ...]": "`kid:secret,kid2:secret2` (the first signs)",
}


def _described(doc: str, section: str) -> dict[str, str]:
    """``name: text`` entries of a Google-style docstring section, joined into one line."""
    found: dict[str, str] = {}
    lines = inspect.cleandoc(doc).splitlines()
    try:
        start = lines.index(f"{section}:") + 1
    except ValueError:
        return found
    name = None
    for line in lines[start:]:
        if line and not line.startswith(" "):
            break
        entry = re.match(r"^    (\w+): (.*)$", line)
        if entry:
            name = entry.group(1)
            found[name] = entry.group(2).strip()
        elif name and line.strip():
            found[name] += " " + line.strip()
    return {k: v.replace("``", "`") for k, v in found.items()}


def _default(f: Field[Any], name: str) -> str:
    if name in COMPUTED:
        return COMPUTED[name]
    value = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
    if isinstance(value, frozenset):
        value = ",".join(sorted(value))
    elif value == ():
        return "none"
    elif isinstance(value, float) and value >= 3600 and value % 3600 == 0:
        hours = value / 3600
        days = hours / 24
        span = (f"{days:g} day{'s' * (days != 1)}" if hours % 24 == 0
                else f"{hours:g} hour{'s' * (hours != 1)}")
        return f"`{value:g}` ({span})"
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 10_000:
        return f"`{value}` ({value:,})"
    return f"`{value}`"


def rows() -> list[str]:
    hub_args = _described(Hub.__doc__ or "", "Args")
    limit_attrs = _described(Limits.__doc__ or "", "Attributes")
    table = ["| setting | in code | environment variable | default | what it does |",
             "|---|---|---|---|---|"]
    groups: list[tuple[str, tuple[Field[Any], ...], dict[str, str]]] = [
        ("", fields(Settings), hub_args), ("limits.", fields(Limits), limit_attrs)]
    for prefix, group, described in groups:
        for f in group:
            if f.name in SKIPPED:
                continue
            name = prefix + f.name
            code = (f"`Hub(limits=Limits({f.name}=...))`" if prefix
                    else f"`Hub({f.name}=...)`")
            env = environment_variable(name)
            form = "a URL" if name == "broker" else FORMS.get(str(f.type), str(f.type))
            variable = f"`{env}` ({form})" if env else "-"
            what = described.get(f.name, "")
            if not what:
                raise SystemExit(f"{name} has no description in Hub's Args or Limits' "
                                 "Attributes: document it there first")
            table.append(f"| `{name}` | {code} | {variable} | {_default(f, name)} | "
                         f"{what.replace('|', '/')} |")
    return table


def render(page: str) -> str:
    before, found, rest = page.partition(START)
    if not found or END not in rest:
        raise SystemExit(f"{PAGE} lacks the markers {START!r} ... {END!r}")
    after = rest.split(END, 1)[1]
    return f"{before}{START}\n" + "\n".join(rows()) + f"\n{END}{after}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if out of date")
    options = parser.parse_args()
    page = PAGE.read_text()
    wanted = render(page)
    if options.check:
        if wanted != page:
            raise SystemExit(f"{PAGE} is out of date: run python scripts/configuration_table.py")
        return
    PAGE.write_text(wanted)


if __name__ == "__main__":
    main()
