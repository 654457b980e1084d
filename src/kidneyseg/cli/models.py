"""`kidneyseg models`: the registered networks with their parameter counts."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from kidneyseg.cli.common import one_line_errors
from kidneyseg.errors import KidneysegError

EXAMPLES = """
Examples:

  kidneyseg models

  kidneyseg models sca_unet_3d --set channels=[8,16,32,64] --json
"""


def register(app: typer.Typer) -> None:
    app.command("models", epilog=EXAMPLES)(models)


def _parse_overrides(items: list[str]) -> dict[str, Any]:
    from kidneyseg.plaindata import parse_override

    return dict(parse_override(item, "argument=value, e.g. channels=[16,32,64]") for item in items)


@one_line_errors
def models(
    name: Annotated[str | None, typer.Argument(help="Show one model in detail.")] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Constructor override argument=value (YAML value); repeatable."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the registered networks: spatial dims, classes, parameter count, size divisor, paper."""
    from kidneyseg.models import list_models, model_info

    kwargs = _parse_overrides(overrides or [])
    if kwargs and name is None:
        raise KidneysegError(
            "--set needs a model name, e.g. kidneyseg models unet_2d --set channels=[16,32,64]"
        )
    infos = [model_info(n, **kwargs) for n in ([name] if name else list_models())]
    if as_json:
        typer.echo(json.dumps(infos if name is None else infos[0], indent=2))
        return
    if name is not None:
        info = infos[0]
        typer.echo(f"{info['name']}: {info['summary']}")
        typer.echo(f"  network     {info['network']} ({info['spatial_dims']}D)")
        typer.echo(f"  channels    {info['in_channels']} in -> {info['out_channels']} classes")
        typer.echo(f"  parameters  {info['parameters']:,}")
        typer.echo(
            f"  divisor     {'x'.join(map(str, info['divisor']))} (other sizes are padded and cropped back)"
        )
        typer.echo(f"  paper       {info['paper']}")
        for key, value in info["arguments"].items():
            typer.echo(f"  {key} = {value}")
        return
    header = f"{'model':<21} {'dims':>4} {'classes':>7} {'parameters':>12} {'divisor':>7}  paper"
    typer.echo(header)
    for info in infos:
        typer.echo(
            f"{info['name']:<21} {info['spatial_dims']:>3}D {info['out_channels']:>7} "
            f"{info['parameters']:>12,} {info['divisor'][0]:>7}  {info['paper'].split(',')[0]}"
        )
    typer.echo("")
    typer.echo(_bundled_line())


def _bundled_line() -> str:
    """The bundled pretrained model: what predict and segment() use without --model/model=."""
    from kidneyseg.checkpoint import load_checkpoint
    from kidneyseg.predict.pretrained import BUNDLED, bundled_path

    path = bundled_path()
    if not path.is_file():
        return f"bundled pretrained model {BUNDLED}: missing from this installation"
    ckpt = load_checkpoint(path)
    parameters = sum(int(v.numel()) for v in ckpt.model_state.values() if hasattr(v, "numel"))
    return (
        f"bundled pretrained model (the default of `kidneyseg predict`): {BUNDLED} = "
        f"{ckpt.config.model.name}, {ckpt.label_map.num_classes} classes, {parameters:,} weights, "
        f"recipe {ckpt.config.train.recipe}, trained on phantoms only; licence CC BY-NC-SA 4.0 "
        "(docs/pretrained.md)"
    )
