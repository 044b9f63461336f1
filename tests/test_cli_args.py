"""The command line's arguments: `main(argv)` repeats the argv it was given, `upload --help` shows
every option under its group's panel, and a plain upload leaves the other commands' imports alone."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import pytest
import typer
from conftest import API_KEY, ThreadedEmulator, cli_env, run_cli

from bulk_uploader import samples
from bulk_uploader.cli.arggroups import OptionGroup, grouped_command
from bulk_uploader.cli.runtime import retry_command
from bulk_uploader.cli.upload_args import (
    AuthArgs,
    DestinationArgs,
    ExactlyOnceArgs,
    MigrationArgs,
    OutputArgs,
    ReadArgs,
    SpeedArgs,
)

GROUPS = (DestinationArgs, AuthArgs, SpeedArgs, ExactlyOnceArgs, ReadArgs, MigrationArgs, OutputArgs)
# Modules only the other commands need: the emulator (and sqlite3), cryptography, the manifest builder.
OTHER_COMMANDS_ONLY = ("bulk_uploader.emulator", "sqlite3", "cryptography", "bulk_uploader.builder",
                       "bulk_uploader.sakey")
DECOY_ARGV = ["/usr/local/bin/some-wrapper", "decoy.jsonl", "--decoy-option"]


def run_main(argv: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """`main(argv)` called from Python in a process whose own sys.argv says something else.

    Returns the process and the modules of OTHER_COMMANDS_ONLY it had loaded when it exited.
    """
    script = "\n".join([
        "import atexit, json, sys",
        f"sys.argv = {DECOY_ARGV!r}",
        f"heavy = {OTHER_COMMANDS_ONLY!r}",
        "atexit.register(lambda: print(json.dumps(sorted(",
        "    m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in heavy)))))",
        "from bulk_uploader.cli import main",
        f"main({argv!r})",
    ])
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=cwd,
                          env=cli_env(API_KEY=API_KEY), stdin=subprocess.DEVNULL)
    loaded = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else ["<nothing printed>"]
    return proc, loaded


@pytest.mark.parametrize("command", [[], ["upload"]])
def test_the_retry_command_repeats_the_argv_main_was_given(
    tmp_path: Path, served: ThreadedEmulator, command: list[str]
) -> None:
    manifest = samples.write_dataset(tmp_path, 3, sizes=(1000,))
    with manifest.open("a") as f:  # a row left to do, so the summary prints the command to run again
        f.write(json.dumps({"id": "gone", "audio_path": "audio/gone.wav", "metadata": samples.metadata(0)}) + "\n")
    args = [str(manifest), "--endpoint", served.target, "--insecure", "--connection-id", "demo-audio", "--quiet"]

    proc, _ = run_main(command + args, tmp_path)

    assert proc.returncode == 1, proc.stderr
    assert "uploaded 3" in proc.stderr and "FILE_NOT_FOUND: 1" in proc.stderr
    retry_lines = [line for line in proc.stderr.splitlines() if line.startswith("to try the rest again")]
    assert retry_lines == [f"to try the rest again, run the same command: bulk-upload {shlex.join(args)}"]
    assert "decoy" not in proc.stderr


def test_a_one_row_upload_leaves_the_other_commands_unloaded(tmp_path: Path, served: ThreadedEmulator) -> None:
    manifest = samples.write_dataset(tmp_path, 1, sizes=(1000,))
    proc, loaded = run_main([str(manifest), "--endpoint", served.target, "--insecure", "--connection-id",
                             "demo-audio", "--quiet"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "uploaded 1" in proc.stderr
    assert loaded == []


def test_the_retry_command_drops_upload_and_hides_a_token_command() -> None:
    shown = retry_command(["upload", "m.jsonl", "--iam-token-command", "echo t1.secret", "--quiet"])
    assert shown == "bulk-upload m.jsonl --iam-token-command '<same command>' --quiet"


def _help_options_by_panel(text: str) -> dict[str, str]:
    """`--option` -> the title of the panel it is listed under, from rich's boxed --help."""
    panel, found = "", {}
    for line in text.splitlines():
        title = re.match(r"╭─ (.+?) ─", line)
        if title:
            panel = title.group(1)
        option = re.match(r"│ (--[a-z][a-z-]*)", line)
        if option:
            found[option.group(1)] = panel
    return found


def test_upload_help_lists_every_option_under_its_group() -> None:
    result = run_cli("upload", "--help")  # cli_env sets COLUMNS=200: one line per option
    assert result.returncode == 0, result.stderr
    expected = {"--" + field.name.replace("_", "-"): group.panel
                for group in GROUPS for field in dataclasses.fields(group)}
    assert len(expected) == 44
    listed = _help_options_by_panel(result.stdout)
    assert listed.pop("--help") == "Options"
    assert listed == expected
    for group in GROUPS:
        assert f"╭─ {group.panel} ─" in result.stdout


@dataclasses.dataclass(frozen=True)
class _Clashing(OptionGroup):
    panel = "Clashing"
    endpoint: Annotated[str, typer.Option(help="DestinationArgs has --endpoint too")] = "x"


def test_group_fields_may_not_share_a_name() -> None:
    def command(destination: DestinationArgs, clashing: _Clashing) -> None:
        raise AssertionError("never called")

    with pytest.raises(TypeError, match="more than one parameter or group field named endpoint"):
        grouped_command(command)


def test_a_group_is_a_frozen_dataclass_made_from_its_fields_only() -> None:
    speed = SpeedArgs(concurrency=3)
    assert (speed.concurrency, speed.retries) == (3, 10)  # the rest keep their defaults
    assert repr(speed).startswith("SpeedArgs(concurrency=3, connections=None, rps=0.0,")
    with pytest.raises(dataclasses.FrozenInstanceError):
        speed.concurrency = 4  # type: ignore[misc]
    with pytest.raises(TypeError, match="SpeedArgs has no field concurency"):
        SpeedArgs(concurency=3)


def test_help_at_80_columns_shows_every_option_name_and_default_whole() -> None:
    result = run_cli("upload", "--help", env=cli_env(COLUMNS="80"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(map(len, lines)) <= 80
    assert "…" not in result.stdout
    expected = {"--" + field.name.replace("_", "-"): group.panel
                for group in GROUPS for field in dataclasses.fields(group)}
    listed = _help_options_by_panel(result.stdout)
    listed.pop("--help")
    assert listed == expected  # a name cut short would be listed under another spelling
    defaults = [getattr(field.default, "value", field.default) for group in GROUPS for field in dataclasses.fields(group)
                if field.default not in (None, False, "")]
    assert "api.speechsense.yandexcloud.net:443" in defaults
    for default in defaults:
        assert any(f"{default}]" in line for line in lines), f"default {default!r} is not shown whole on one line"
    for command in ("--help", "manifest --help", "report --help", "emulator --help", "demo --help"):
        other = run_cli(*command.split(), env=cli_env(COLUMNS="80"))
        assert other.returncode == 0 and "…" not in other.stdout, other.stdout


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"bulk-upload {importlib.metadata.version('bulk-upload')}"


def test_every_commands_description_keeps_its_paragraphs_whole_on_screen() -> None:
    # The help shows a docstring's line breaks as they are: a paragraph written over two lines
    # breaks mid-sentence on an 80-column terminal.
    from bulk_uploader.cli import app

    assert len(app.registered_commands) >= 7  # upload, emulator, talks, report, manifest, demo, verify
    for command in app.registered_commands:
        doc = (command.callback.__doc__ if command.callback else None) or ""
        for paragraph in doc.strip().split("\n\n"):
            assert "\n" not in paragraph.strip(), (command.name or command.callback, paragraph)
