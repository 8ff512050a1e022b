"""Render ``docs/settings.md`` and ``docs/gunicorn-settings.md`` from the registry,
so the docs cannot drift.

Run ``python -m clusterserve.config.reference`` (it writes both files from the
repository root); a test checks that they match.
"""

from __future__ import annotations

from pathlib import Path

from clusterserve.config.settings import BY_NAME, GUNICORN_SETTINGS, HOOK, SETTINGS


def render() -> str:
    lines = [
        "# Settings",
        "",
        "Generated from `clusterserve/config/settings.py` by",
        "`python -m clusterserve.config.reference`; do not edit by hand.",
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


def render_gunicorn() -> str:
    """Every gunicorn setting and what clusterserve does with it."""
    lines = [
        "# gunicorn's settings in clusterserve",
        "",
        "Generated from `clusterserve/config/settings.py` by",
        "`python -m clusterserve.config.reference`; do not edit by hand.",
        "",
        "*used*: same name, flags and meaning. *not supported yet*: refused with a clear "
        "error from any source (nothing is silently ignored). *ignored with a warning*: "
        "a `gunicorn.conf.py` may set it and gets one warning line; on the command line "
        "or in TOML it is an error.",
        "",
        "| gunicorn setting | in clusterserve | flags |",
        "|---|---|---|",
    ]
    for name in sorted(GUNICORN_SETTINGS):
        setting = BY_NAME.get(name)
        if setting is None:
            status, flags = "ignored with a warning", ""
        elif not setting.supported:
            status, flags = "not supported yet", ", ".join(f"`{f}`" for f in setting.flags)
        else:
            status = "used (hook)" if setting.kind == HOOK else "used"
            flags = ", ".join(f"`{f}`" for f in setting.flags) or "(file only)"
        lines.append(f"| `{name}` | {status} | {flags} |")
    return "\n".join(lines) + "\n"


DOCS = {"settings.md": render, "gunicorn-settings.md": render_gunicorn}

if __name__ == "__main__":
    docs = Path("docs")
    for filename, renderer in DOCS.items():
        (docs / filename).write_text(renderer())
