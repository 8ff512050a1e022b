"""Render ``docs/settings.md`` and the gunicorn settings table of
``docs/migrating.md`` from the registry, so the docs cannot drift.

Run ``python -m clusterserve.config.reference`` (it writes both from the
repository root); a test checks that they match.
"""

from __future__ import annotations

from pathlib import Path

from clusterserve.config import gunicorn
from clusterserve.config.settings import BY_NAME, HOOK, SETTINGS


def render() -> str:
    lines = [
        "# Settings",
        "",
        "Generated from `clusterserve/config/settings.py` by",
        "`python -m clusterserve.config.reference`; do not edit by hand.",
        "",
        "Names are gunicorn's. Sources, later wins: defaults < environment defaults",
        "(`PORT`, `WEB_CONCURRENCY`, `FORWARDED_ALLOW_IPS`) < config file < `GUNICORN_CMD_ARGS`",
        "< `CLUSTERSERVE_CMD_ARGS` < command line. Hooks can only be set in a Python config file.",
        "What clusterserve does with each of gunicorn's settings: [migrating.md](migrating.md).",
    ]
    section = None
    for setting in SETTINGS:
        if setting.section != section:
            section = setting.section
            lines += ["", f"## {section}", "", "| setting | flags | default | description |",
                      "|---|---|---|---|"]
        flags = ", ".join(f"`{flag}`" for flag in (*setting.flags, *setting.off_flags)) or "(file only)"
        default = "" if setting.kind == HOOK else f"`{setting.shown_default or repr(setting.default)}`"
        text = setting.help.replace("|", "\\|")
        lines.append(f"| `{setting.name}` | {flags} | {default} | {text} |")
    return "\n".join(lines) + "\n"


TABLE_START = "<!-- the gunicorn settings table, from python -m clusterserve.config.reference -->"
TABLE_END = "<!-- end of the gunicorn settings table -->"
SHOWN = {gunicorn.ACTED: "acted on", gunicorn.NO_OP: "accepted, no effect",
         gunicorn.REFUSED: "refused, exit 2"}


def render_gunicorn_table() -> str:
    """Every gunicorn setting and what clusterserve does with it, one row each."""
    lines = ["| gunicorn setting | here | why, or what differs |", "|---|---|---|"]
    for name in sorted(gunicorn.GUNICORN_NAMES):
        group, note = gunicorn.disposition(name, BY_NAME)
        lines.append(f"| `{name}` | {SHOWN[group]} | {note.replace('|', chr(92) + '|')} |")
    return "\n".join(lines)


def with_gunicorn_table(text: str) -> str:
    """``text`` (docs/migrating.md) with its generated table replaced by the current one."""
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    return f"{head}{TABLE_START}\n{render_gunicorn_table()}\n{TABLE_END}{tail}"


# Each generated doc, from its current text.
DOCS = {"settings.md": lambda current: render(), "migrating.md": with_gunicorn_table}

if __name__ == "__main__":
    docs = Path("docs")
    for filename, renderer in DOCS.items():
        path = docs / filename
        path.write_text(renderer(path.read_text()))
