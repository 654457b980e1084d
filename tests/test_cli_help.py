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
