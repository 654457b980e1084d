"""Every verb's --help: examples, and flags shown without type noise."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from kidneyseg.cli import VERBS, app


@pytest.mark.parametrize("verb", VERBS)
def test_help_has_examples_and_plain_flags(verb):
    result = CliRunner().invoke(app, [verb, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Examples:" in result.output and f"kidneyseg {verb}" in result.output
    assert "<bool>" not in result.output and "list[" not in result.output


def _help_texts(command):
    """Every help text of `command` and its subcommands: the command's, its epilog, its options'."""
    yield from (text for text in (command.help, command.epilog) if text)
    yield from (p.help for p in command.params if getattr(p, "help", None))
    for sub in getattr(command, "commands", {}).values():
        yield from _help_texts(sub)


def test_brackets_in_help_are_shown_not_taken_for_markup():
    """Typer renders help with rich markup, which drops `[word]` as a style tag: the install hint
    of --precision read "pip install 'kidneyseg'". Every help text renders with its brackets
    (written `\\[word]` where rich would take them for a tag)."""
    from rich.text import Text
    from typer.main import get_command

    result = CliRunner().invoke(app, ["predict", "--help"], env={"COLUMNS": "200"})
    words = " ".join(result.output.replace("\u2502", " ").split())  # the help box's rows joined
    assert "needs NNCF: pip install nncf, or '.[int8]' in a kidneyseg checkout)." in words
    for text in _help_texts(get_command(app)):
        assert Text.from_markup(text).plain == text.replace("\\[", "["), text


def test_phantom_help_says_phantoms_may_be_unenhanced():
    result = CliRunner().invoke(app, ["phantom", "--help"], env={"COLUMNS": "200"})
    words = " ".join(result.output.replace("\u2502", " ").split())
    assert "Generate synthetic abdominal CT (unenhanced or in a contrast phase)" in words
    assert "contrast-enhanced" not in words
