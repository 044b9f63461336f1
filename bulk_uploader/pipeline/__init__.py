"""The run: the orchestrator and the collaborators it wires, one job each.

    feeder.py        manifest rows -> checks -> read-ahead -> a bounded JobQueue
    sender.py        one row to its outcome, attempt by attempt, under the RetryPolicy
    recorder.py      the only writer of the results file; counts outcomes
    control.py       RunControl: stop (finish what is in flight) or abort a run
    summary.py       RunSummary: how a run ended, as the closing text
    orchestrator.py  run_upload(): builds them, owns the task group

The stages they call (manifest, validation, reader, transport, results) do not know
about each other; only this package knows their order.
"""

from bulk_uploader.pipeline.control import RunControl
from bulk_uploader.pipeline.orchestrator import run_upload
from bulk_uploader.pipeline.summary import RunSummary

__all__ = ["RunControl", "RunSummary", "run_upload"]
