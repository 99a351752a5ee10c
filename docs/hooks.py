"""MkDocs hooks: the reference pages' generated parts (every config key from the schema and the
registries, every command's ``--help``) are inserted at build time, so they are never stale."""

from __future__ import annotations

from typer.testing import CliRunner

from fedsim.cli import app
from fedsim.config.reference import config_reference

COMMANDS = ("run", "list", "plot", "report")


def cli_reference() -> str:
    """``fedsim --help`` and each command's ``--help``, as the terminal shows them."""
    runner, parts = CliRunner(), []
    for args in ([], *([c] for c in COMMANDS)):
        out = runner.invoke(app, [*args, "--help"], prog_name="fedsim", env={"COLUMNS": "100", "NO_COLOR": "1"})
        title = f"fedsim {args[0]}" if args else "fedsim"
        parts.append(f"## `{title}`\n\n```text\n{out.output.rstrip()}\n```\n")
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 - MkDocs' hook signature
    if "<!-- config-reference -->" in markdown:
        markdown = markdown.replace("<!-- config-reference -->", config_reference())
    if "<!-- cli-reference -->" in markdown:
        markdown = markdown.replace("<!-- cli-reference -->", cli_reference())
    return markdown
