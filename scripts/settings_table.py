"""Write the settings tables of docs/configuration.md from `core.settings.Settings`:
`python -m scripts.settings_table` (or `--check`, which only says whether the page is up to date).

One row per field: its environment variable(s), its default, what it accepts (type and bounds) and its
description. Rows are grouped by the section comments of the class: a comment block right above a field
starts a section, titled by its first clause (up to the first colon or full stop outside brackets); the
rest of the comment is the section's prose. The tables go between `<!-- settings:begin -->` and
`<!-- settings:end -->`; everything else on the page is written by hand.
"""

from __future__ import annotations

import ast
import inspect
import math
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import annotated_types
from pydantic import AliasChoices, SecretStr
from pydantic.fields import FieldInfo

from core.settings import Settings

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"
COMMAND = "python -m scripts.settings_table"

TYPE_WORDS = {bool: "`true` or `false`", int: "integer", float: "number", str: "text", Path: "path", SecretStr: "secret"}
BOUNDS = ((annotated_types.Gt, "gt", ">"), (annotated_types.Ge, "ge", "≥"), (annotated_types.Lt, "lt", "<"),
          (annotated_types.Le, "le", "≤"))


@dataclass
class Section:
    title: str
    prose: str
    fields: list[str] = field(default_factory=list)


def split_title(comment: str) -> tuple[str, str]:
    """"Title: the rest." → ("Title", "The rest."); a colon or full stop inside brackets or backticks does not count."""
    depth, quoted = 0, False
    for at, char in enumerate(comment):
        quoted ^= char == "`"
        depth += (char in "([") - (char in ")]")
        ending = at + 1 == len(comment) or comment[at + 1] == " "
        if char in ":." and ending and depth == 0 and not quoted:
            rest = comment[at + 1:].strip()
            return comment[:at].strip(), rest[:1].upper() + rest[1:]
    return comment.strip(), ""


def sections(settings: type = Settings) -> list[Section]:
    """The class's fields in source order, grouped under the comment blocks that start each section."""
    source = Path(inspect.getsourcefile(settings)).read_text()
    lines = source.splitlines()
    body = next(node for node in ast.walk(ast.parse(source))
                if isinstance(node, ast.ClassDef) and node.name == settings.__name__).body
    found: list[Section] = []
    for node in body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        comment, row = [], node.lineno - 2  # the line above the field (lineno counts from 1)
        while row >= 0 and lines[row].strip().startswith("#"):
            comment.insert(0, lines[row].strip().lstrip("#").strip())
            row -= 1
        if comment:
            found.append(Section(*split_title(" ".join(comment))))
        if not found:
            raise ValueError(f"{node.target.id}: the first field of {settings.__name__} needs a section comment above it")
        found[-1].fields.append(node.target.id)
    listed = [name for section in found for name in section.fields]
    if listed != list(settings.model_fields):
        raise ValueError(f"fields read from the source {listed} are not {settings.__name__}'s {list(settings.model_fields)}")
    return found


def variables(name: str, info: FieldInfo, prefix: str) -> list[str]:
    """The environment variables that set a field: its aliases when it has any, else prefix + NAME."""
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    return [alias] if isinstance(alias, str) else [prefix + name.upper()]


def is_secret(info: FieldInfo) -> bool:
    return info.repr is False or SecretStr in _types(info.annotation)


def _types(annotation) -> list:
    if isinstance(annotation, types.UnionType):
        return [arg for arg in annotation.__args__ if arg is not type(None)]
    return [annotation]


def _sized(value: int, unit: int, names: tuple[str, ...]) -> str:
    for power, name in reversed(list(enumerate(names))):
        if value >= unit**power and value % unit**power == 0 and power:
            return f"{value // unit**power} {name}"
    return ""


def default(name: str, info: FieldInfo) -> str:
    """The default as one would write it in the environment; a secret's is never shown."""
    value = info.get_default(call_default_factory=True)
    if is_secret(info):
        return ""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, int):
        gloss, side = "", math.isqrt(value)
        if "bytes" in name.split("_"):
            gloss = _sized(value, 1024, ("B", "KiB", "MiB", "GiB", "TiB"))
        elif name.endswith("_pixels") and side * side == value:
            gloss = f"{side} × {side}"
        elif name.endswith("_s") and value >= 3600 and value % 3600 == 0:
            gloss = f"{value // 86400} days" if value % 86400 == 0 and value > 86400 else f"{value // 3600} h"
        return f"`{value}`" + (f" ({gloss})" if gloss else "")
    return f"`{value}`" if str(value) else "`''`"


def accepted(info: FieldInfo) -> str:
    """The field's type in words, with its bounds, pattern or length."""
    words = " or ".join(TYPE_WORDS.get(kind, getattr(kind, "__name__", str(kind))) for kind in _types(info.annotation))
    limits = []
    for meta in info.metadata:
        for bound, attribute, sign in BOUNDS:
            if isinstance(meta, bound):
                limits.append(f"{sign} {getattr(meta, attribute):g}")
        if isinstance(meta, annotated_types.MinLen):
            limits.append(f"of ≥ {meta.min_length} characters")
        if getattr(meta, "pattern", None):
            limits.append(f"`{meta.pattern}`")
    return " ".join([words, ", ".join(limits)]).strip()


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render(settings: type = Settings) -> str:
    """The Markdown that goes between the markers: one table per section."""
    prefix = settings.model_config.get("env_prefix", "")
    out = [BEGIN, f"<!-- Generated from core/settings.py by `{COMMAND}`: edit the descriptions there. -->", ""]
    for section in sections(settings):
        out += [f"### {section.title}", ""] + ([section.prose, ""] if section.prose else [])
        out += ["| variable | default | accepted | what |", "|---|---|---|---|"]
        for name in section.fields:
            info = settings.model_fields[name]
            names = " or ".join(f"`{variable}`" for variable in variables(name, info, prefix))
            out.append(f"| {names} | {cell(default(name, info))} | {cell(accepted(info))} | {cell(info.description or '')} |")
        out.append("")
    return "\n".join(out + [END])


def update(page: str, settings: type = Settings) -> str:
    """The page with its generated block replaced by a fresh one."""
    start, stop = page.find(BEGIN), page.find(END)
    if start < 0 or stop < start:
        raise ValueError(f"the page needs a {BEGIN} … {END} block")
    return page[:start] + render(settings) + page[stop + len(END):]


def main() -> None:
    page = DOC.read_text()
    fresh = update(page)
    if "--check" in sys.argv:
        sys.exit(0 if fresh == page else f"docs/configuration.md's settings tables are stale: run `{COMMAND}`")
    DOC.write_text(fresh)


if __name__ == "__main__":
    main()
