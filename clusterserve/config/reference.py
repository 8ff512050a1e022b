"""Render ``docs/settings.md`` from the registry, so the docs cannot drift.

Run ``python -m clusterserve.config.reference > docs/settings.md``; a test
checks that the file matches.
"""

from __future__ import annotations

from clusterserve.config.settings import HOOK, SETTINGS


def render() -> str:
    lines = [
        "# Settings",
        "",
        "Generated from `clusterserve/config/settings.py` by",
        "`python -m clusterserve.config.reference > docs/settings.md`; do not edit by hand.",
        "",
        "Names are gunicorn's. Sources, later wins: defaults < environment defaults",
        "(`PORT`, `WEB_CONCURRENCY`, `FORWARDED_ALLOW_IPS`) < config file < `CLUSTERSERVE_CMD_ARGS`",
        "< command line. Hooks can only be set in a Python config file.",
    ]
    section = None
    for setting in SETTINGS:
        if setting.section != section:
            section = setting.section
            lines += ["", f"## {section}", "", "| setting | flags | default | description |",
                      "|---|---|---|---|"]
        flags = ", ".join(f"`{flag}`" for flag in setting.flags) or "(file only)"
        default = "" if setting.kind == HOOK else f"`{setting.default!r}`"
        text = setting.help.replace("|", "\\|")
        lines.append(f"| `{setting.name}` | {flags} | {default} | {text} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
