"""The `kidneyseg` command: a thin layer over the Python API.

Each verb lives in its own module `kidneyseg.cli.<verb>` with a `register(app)` function.
Heavy libraries (torch, MONAI, SimpleITK) are imported inside the commands, so that
`kidneyseg --help` answers at once.
"""

from __future__ import annotations

import importlib
import os
import re
import time

import typer
import typer.core
import typer.rich_utils

from kidneyseg import __version__


def _process_age() -> float:
    """Seconds since this process started (Linux `/proc`; 0 elsewhere)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            start_ticks = float(f.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 0.0)


STARTED = time.perf_counter() - _process_age()
"""When the process started (interpreter start-up included), for honest total times."""


def _plain_display_type(display_type):
    """Help shows `--tta`, not `--tta <bool>`, and `--model <path>`, not `<list[Path]>`."""

    def plain(self, ctx) -> str | None:
        if getattr(self, "is_flag", False):
            return None
        text = display_type(self, ctx)
        return text and re.sub(r"list\[(\w+)\]", lambda m: m.group(1).lower(), text)

    return plain


for _param in (typer.core.TyperOption, typer.core.TyperArgument):
    _param.display_type_rich = _plain_display_type(_param.display_type_rich)  # type: ignore[method-assign]


def _one_line_usage_error(exc) -> None:
    """A bad option value or an unknown option is one line too, not Typer's usage box."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # the help was printed instead
        return
    ctx = getattr(exc, "ctx", None)
    hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
    typer.echo(f"error: {' '.join(exc.format_message().split())}{hint}", err=True)


typer.rich_utils.rich_format_error = _one_line_usage_error


def _refusing_repeats(parse_args):
    """An option that takes one value, given twice (`-i a.nii.gz -i b.nii.gz`), is refused:
    Click would keep the last value without a word. Counted on Click's own parse of the
    arguments (values, `--opt=value`, `-ivalue`, `--`), before the real one."""

    def parse(self, ctx, args):
        _, _, order = self.make_parser(ctx).parse_args(args=list(args))
        if not any(param.is_eager for param in order):  # --help and --version answer as they are
            seen: set[str] = set()
            for param in order:
                single = param.param_type_name == "option" and not (
                    param.multiple or getattr(param, "is_flag", False) or getattr(param, "count", False)
                )
                if single and param.name in seen:
                    raise typer.BadParameter("given twice; it takes one value", ctx=ctx, param=param)
                seen.add(param.name)
        return parse_args(self, ctx, args)

    return parse


typer.core.TyperCommand.parse_args = _refusing_repeats(typer.core.TyperCommand.parse_args)  # type: ignore[method-assign]

VERBS: tuple[str, ...] = (
    "demo",
    "phantom",
    "preprocess",
    "train",
    "predict",
    "evaluate",
    "compare",
    "report",
    "models",
)

app = typer.Typer(
    name="kidneyseg",
    help="Segment kidneys, renal tumors and renal cysts in abdominal CT.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kidneyseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Segment kidneys, renal tumors and renal cysts in abdominal CT."""


for _verb in VERBS:
    importlib.import_module(f"kidneyseg.cli.{_verb}").register(app)


def main() -> None:
    app(prog_name="kidneyseg")
