"""`bulk-upload verify MANIFEST`: Get every uploaded row's talk, within the read budget, and say which
are present with their fields, which differ and which are missing (bulk_uploader.verify); it takes
the upload's destination, credential and read options, reads the environment for credentials, and
stops cleanly on SIGINT/SIGTERM with what it checked so far. Annotations are evaluated as the module
loads (see bulk_uploader.cli.application); those that name what only a run loads are quoted.
"""

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from bulk_uploader.cli.application import app, fail
from bulk_uploader.cli.arggroups import OptionGroup, grouped_command, option_group
from bulk_uploader.cli.upload import read_budget
from bulk_uploader.cli.upload_args import AuthArgs, DestinationArgs, ReadArgs
from bulk_uploader.errors import AuthError, ConfigError, ResultsFileError
from bulk_uploader.options import results_path_for

if TYPE_CHECKING:
    import anyio

    from bulk_uploader.auth import AuthProvider
    from bulk_uploader.lookup import Lookup
    from bulk_uploader.transport import Transport
    from bulk_uploader.verify import VerifyOptions, VerifySummary


@option_group
class VerifyArgs(OptionGroup):
    """What to check, where to write the report, and whether to wait for processing."""

    panel = "Verify"
    results: Annotated[
        Optional[list[Path]], typer.Option(help="Results file of the upload, repeatable for shards "
                                                "(default MANIFEST.results.jsonl)")
    ] = None
    report: Annotated[
        Optional[Path], typer.Option(help="One JSON line per row checked (default: beside the results file)")
    ] = None
    mapping: Annotated[Optional[Path], typer.Option(help="The mapping the manifest was uploaded with")] = None
    sample: Annotated[float, typer.Option(help="Check this share of the uploaded rows (a stable sample)")] = 1.0
    wait: Annotated[bool, typer.Option(help="Poll until every talk's processing is SUCCESS or FAILED")] = False
    wait_timeout: Annotated[float, typer.Option(help="Seconds --wait polls at most")] = 3600.0
    poll_interval: Annotated[float, typer.Option(help="Seconds between --wait's polls")] = 60.0
    timeout: Annotated[float, typer.Option(help="Seconds per Get")] = 60.0
    retries: Annotated[int, typer.Option(help="Further attempts after a transient error")] = 10


def _options(manifest: Path, check: VerifyArgs, destination: DestinationArgs, reads: ReadArgs) -> "VerifyOptions":
    from bulk_uploader.mapping import load_mapping
    from bulk_uploader.verify import VerifyOptions, report_path_for

    if not manifest.is_file():
        raise ConfigError(f"{manifest}: manifest not found")
    results = check.results or [results_path_for(manifest)]
    return VerifyOptions(
        manifest=manifest, results=results, report=check.report or report_path_for(results[0]),
        endpoint=destination.endpoint, mapping=load_mapping(check.mapping) if check.mapping else None,
        budget=read_budget(reads), sample=check.sample, wait=check.wait, wait_timeout=check.wait_timeout,
        poll_interval=check.poll_interval,
    )


async def _watch(scope: "anyio.CancelScope", summary: "VerifySummary") -> None:
    import signal

    import anyio

    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            summary.interrupted = True
            scope.cancel()
            return


async def _keep_fresh(credentials: "AuthProvider", scope: "anyio.CancelScope", summary: "VerifySummary") -> None:
    try:
        await credentials.keep_fresh()
    except AuthError as exc:
        summary.failure = str(exc)
        scope.cancel()


async def _verify(options: "VerifyOptions", talks: dict[str, str], transport: "Transport", lookup: "Lookup",
                  credentials: "AuthProvider") -> "VerifySummary":
    import anyio

    from bulk_uploader.errors import CallFailure
    from bulk_uploader.verify import Verifier, estimate

    verifier = Verifier(options, lookup, lambda text: typer.echo(text))
    typer.echo(estimate(verifier.count_sampled(talks), options))
    try:
        await credentials.start()
        async with anyio.create_task_group() as group:
            scope = anyio.CancelScope()
            group.start_soon(_watch, scope, verifier.summary)
            group.start_soon(_keep_fresh, credentials, scope, verifier.summary)
            with scope:
                try:
                    await verifier.run(talks)
                except CallFailure as failure:
                    verifier.summary.failure = f"Get failed: {failure}; the rows checked so far are in the report"
            group.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await transport.close()
    return verifier.summary


@app.command("verify")
@grouped_command
def verify(
    manifest: Annotated[Path, typer.Argument(help="The manifest that was uploaded: .jsonl or .csv")],
    destination: DestinationArgs,
    auth: AuthArgs,
    reads: ReadArgs,
    check: VerifyArgs,
) -> None:
    """Check that every uploaded row's talk is stored with its fields, and how far its processing is."""
    import asyncio

    from bulk_uploader.cli.credentials import choose_credentials
    from bulk_uploader.lookup import Lookup
    from bulk_uploader.options import SearchScope
    from bulk_uploader.reads import ReadGate
    from bulk_uploader.retry import RetryPolicy
    from bulk_uploader.stats import ReadStats
    from bulk_uploader.transport import Transport
    from bulk_uploader.verify import uploaded_talks

    try:
        options = _options(manifest, check, destination, reads)
        credentials = choose_credentials(auth, destination.insecure, os.environ)
        if credentials is None:
            raise ConfigError("no credentials: set API_KEY or IAM_TOKEN, or pass --api-key-file/--iam-token-file")
        talks = uploaded_talks(options.results, options.endpoint)
    except (ConfigError, ResultsFileError) as exc:
        raise fail(str(exc)) from None

    async def main() -> "VerifySummary":
        transport = Transport(options.endpoint, credentials, insecure=destination.insecure,
                              max_message_bytes=4 * 1024 * 1024)
        policy = RetryPolicy(retries=check.retries, credentials=credentials)
        scope = SearchScope(reads.organization_id, reads.space_id, reads.project_id)
        lookup = Lookup(transport, scope, ReadGate(options.budget), policy, check.timeout, ReadStats())
        return await _verify(options, talks, transport, lookup, credentials)

    try:
        summary = asyncio.run(main())
    except (AuthError, ResultsFileError) as exc:
        raise fail(str(exc)) from None
    for line in summary.lines():
        typer.echo(line)
    raise typer.Exit(summary.exit_code)
