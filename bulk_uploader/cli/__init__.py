"""The command line: the one home of typer, argv and the environment.

    bulk-upload MANIFEST [options]     upload (the default command)
    bulk-upload demo                   emulator + sample data set + upload, all on this machine
    bulk-upload emulator [options]     run the local SpeechSense emulator
    bulk-upload talks STORE            list what an emulator store holds
    bulk-upload manifest FOLDER        build a manifest from another vendor's export
    bulk-upload report RESULTS...      summarise results files, write the rows to retry
    bulk-upload verify MANIFEST        Get every uploaded row's talk: present, fields_differ or missing

`application` holds the typer app and runs it; `upload`, with its option groups in
`upload_args` (built by `arggroups`), its credentials in `credentials` and its run in
`runtime`, is the default command; `verify` checks an upload afterwards; `tools` holds the others.
Importing a command module registers its commands on the app; `main` imports only the module of
the command it runs (every one for the top-level --help), so a command neither loads nor builds
the parameters of the others, and the garbage collector waits while they load (`collector`).
`app` here is the app with every command registered.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

# gRPC's own log lines (reconnects, GOAWAY, fork handlers) mean nothing to a user and break
# up the progress display: off unless asked for with GRPC_VERBOSITY. Set before gRPC loads.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

from bulk_uploader.cli import collector  # noqa: E402

# The command modules in the order --help lists their commands, the default command first.
COMMAND_MODULES = ("bulk_uploader.cli.upload", "bulk_uploader.cli.tools", "bulk_uploader.cli.verify")
_MODULE_OF = {"upload": COMMAND_MODULES[0], "verify": COMMAND_MODULES[2],
              **{name: COMMAND_MODULES[1] for name in ("emulator", "talks", "report", "manifest", "demo")}}


def modules_for(args: Sequence[str]) -> tuple[str, ...]:
    """The command modules a run with these arguments needs: the named command's, else the default
    command's (the application routes anything else to it), every one for the application's own options."""
    if not args or args[0] in ("--help", "-h", "--version"):
        return COMMAND_MODULES  # the help lists every command
    return (_MODULE_OF.get(args[0], COMMAND_MODULES[0]),)


def main(argv: Sequence[str] | None = None) -> Any:
    """Console-script entry point: runs `bulk-upload ARGV` (this process's arguments when argv is None)."""
    args = tuple(sys.argv[1:] if argv is None else argv)
    collector.pause()  # the command resumes it when its work begins; at the latest, its end does
    try:
        from bulk_uploader.cli import application  # typer

        for name in modules_for(args):
            importlib.import_module(name)
        return application.run(args)
    finally:
        collector.resume()


def __getattr__(name: str) -> Any:
    if name == "app":
        from bulk_uploader.cli import application

        for module in COMMAND_MODULES:
            importlib.import_module(module)
        return application.app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["app", "main"]
