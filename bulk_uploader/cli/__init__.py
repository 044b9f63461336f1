"""The command line: the one home of typer, argv and the environment.

    bulk-upload MANIFEST [options]     upload (the default command)
    bulk-upload demo                   emulator + sample data set + upload, all on this machine
    bulk-upload emulator [options]     run the local SpeechSense emulator
    bulk-upload talks STORE            list what an emulator store holds
    bulk-upload manifest FOLDER        build a manifest from another vendor's export
    bulk-upload report RESULTS...      summarise results files, write the rows to retry
    bulk-upload verify MANIFEST        Get every uploaded row's talk: present, fields_differ or missing

`application` holds the typer app and `main`; `upload`, with its option groups in
`upload_args` (built by `arggroups`), its credentials in `credentials` and its run in
`runtime`, is the default command; `verify` checks an upload afterwards; `tools` holds the others. Importing this package
registers every command on the app.
"""

import os

# gRPC's own log lines (reconnects, GOAWAY, fork handlers) mean nothing to a user and break
# up the progress display: off unless asked for with GRPC_VERBOSITY. Set before gRPC loads.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

# Importing a command module registers its commands; --help lists them in that order, the
# default command first.
from bulk_uploader.cli import upload  # noqa: E402, F401
from bulk_uploader.cli.application import app, main  # noqa: E402

# isort: split
from bulk_uploader.cli import tools, verify  # noqa: E402, F401

__all__ = ["app", "main"]
