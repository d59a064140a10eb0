"""The `pipeline` command: spec files and flags in, a plan or a trained model out.

The only module that prints or exits.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from .derive import plan as derive_plan
from .errors import PipelineError
from .files import load_spec
from .hardware import PROFILES, detect, profile

app = typer.Typer(
    help=__doc__.splitlines()[0], no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False
)


@app.callback()
def _commands() -> None:
    """Fine-tune Hugging Face transformers from spec files (add --debug for a traceback on errors)."""


class Format(str, Enum):
    text = "text"
    json = "json"


HardwareName = Annotated[
    str,
    typer.Option("--hardware", "-H", help=f"plan for: this machine ('detect'), or one of {', '.join(PROFILES)}"),
]


@app.command()
def plan(
    spec: Annotated[Path, typer.Argument(help="spec file (.yaml, .yml or .json)")],
    hardware: HardwareName = "detect",
    format: Annotated[Format, typer.Option("--format", "-f")] = Format.text,
) -> None:
    """Show every value a run would use and where it came from, without loading anything."""
    machine = detect() if hardware == "detect" else profile(hardware)
    result = derive_plan(load_spec(spec), machine)
    if format is Format.json:
        typer.echo(json.dumps(result.model_dump(mode="json"), indent=2))
    else:
        typer.echo(str(result))


def main() -> None:
    """Entry point: our errors become a plain message and exit code 2 (``--debug`` shows a traceback)."""
    debug = "--debug" in sys.argv
    if debug:
        sys.argv.remove("--debug")
    try:
        app()
    except PipelineError as e:
        if debug:
            raise
        typer.echo(f"error: {e}", err=True)
        raise SystemExit(2) from None

if __name__ == "__main__":
    main()
