"""The typer application every command registers on, the exit codes, the usage-error exit, and
`run`, which the console script (bulk_uploader.cli.main, the one reader of sys.argv) calls: it
hands the arguments it runs with to the commands as the click context's `obj`, so a caller from
Python sees its own arguments in the retry command rather than those of the process it runs in.

No `from __future__ import annotations` here (nor in the command modules): typer reads the
commands' annotations as objects, which the compiled module makes once, rather than as strings
that typing.get_type_hints and inspect.signature compile each run.
"""

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from bulk_uploader.cli import collector

EXIT_OK, EXIT_ROWS, EXIT_USAGE, EXIT_STOPPED, EXIT_BUG = 0, 1, 2, 3, 4


class _DefaultToUpload(TyperGroup):
    """`bulk-upload manifest.jsonl ...` means `bulk-upload upload manifest.jsonl ...`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["upload", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_DefaultToUpload,
    add_completion=False,
    # A traceback with local variables could show a credential: keep them plain.
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Upload call recordings and chats to Yandex SpeechSense, concurrently and resumably.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        from bulk_uploader import __version__

        try:
            installed = version("bulk-upload")
        except PackageNotFoundError:  # run from a source tree that was never installed
            installed = __version__
        typer.echo(f"bulk-upload {installed}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _application(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=_print_version, help="Print the version and exit")
    ] = False,
) -> None:
    """Upload call recordings and chats to Yandex SpeechSense, concurrently and resumably."""
    if ctx.invoked_subcommand != "upload":  # upload resumes it once its run is loaded (cli.runtime)
        collector.resume()


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """The exit of a command refused before it starts; the caller raises it."""
    typer.echo(f"bulk-upload: {message}", err=True)
    return typer.Exit(code)


def invoked_argv(ctx: typer.Context) -> tuple[str, ...] | None:
    """The arguments `main` ran with; None when the app was called some other way (typer.testing)."""
    obj = ctx.find_root().obj
    return obj if isinstance(obj, tuple) else None


def run(args: tuple[str, ...]) -> Any:
    """Run `bulk-upload ARGS` with the commands registered so far (bulk_uploader.cli.main registers them)."""
    return app(args=list(args), prog_name="bulk-upload", obj=args)
