"""Reading files and holding their bytes: small files read ahead, and the allocator setting for big buffers."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bulk_uploader import reader
from bulk_uploader.errors import RowInvalid
from bulk_uploader.model import Job


def jobs_for(paths: list[Path]) -> list[Job]:
    return [Job(p.name, n, "audio", "c", {}, audio_path=p.name, path=p, size=p.stat().st_size if p.exists() else 0)
            for n, p in enumerate(paths, 1)]


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    paths = []
    for n in range(6):
        path = tmp_path / f"{n}.bin"
        path.write_bytes(os.urandom(1000 + 7000 * n))  # up to 36 KB: more than one os.read for some
        paths.append(path)
    return paths


class ThreadWatch:
    """Which threads read files, recorded by wrapping the reader's one read function."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.threads: list[int] = []
        original = reader._read_all

        def watched(files: list[tuple[str, int]]) -> tuple[list[bytes | None], float]:
            self.threads.append(threading.get_ident())
            return original(files)

        monkeypatch.setattr(reader, "_read_all", watched)
        monkeypatch.setattr(reader, "_read_many", reader._in_executor(watched))


async def test_quick_reads_stay_on_the_event_loop(files: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    watch = ThreadWatch(monkeypatch)
    preload = reader.Preloader(budget=60.0)
    for batch in (files[:3], files[3:]):
        for job in await preload(jobs_for(batch)):
            assert job.data == job.path.read_bytes()  # type: ignore[union-attr]
    assert watch.threads == [threading.get_ident()] * 2 and preload.batches_in_thread == 0


async def test_a_slow_batch_sends_the_next_ones_to_a_thread_and_quick_ones_bring_them_back(
        files: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    watch = ThreadWatch(monkeypatch)
    loop_thread = threading.get_ident()
    preload = reader.Preloader(budget=0.0)  # every batch counts as slow
    await preload(jobs_for(files[:2]))
    moved = await preload(jobs_for(files[2:4]))
    assert watch.threads[0] == loop_thread and watch.threads[1] != loop_thread
    assert [j.data for j in moved] == [p.read_bytes() for p in files[2:4]]
    preload.budget = 60.0  # the file system is quick again
    await preload(jobs_for(files[4:5]))  # still in the thread: it measures the reads there
    await preload(jobs_for(files[5:]))
    assert watch.threads[2] != loop_thread and watch.threads[3] == loop_thread
    assert preload.batches_in_thread == 2


async def test_a_file_that_cannot_be_read_ahead_fails_only_its_own_row(files: list[Path]) -> None:
    missing = files[0].with_name("gone.bin")
    jobs = await reader.Preloader()(jobs_for([files[1], missing, files[2]]))
    assert jobs[0].data == files[1].read_bytes() and jobs[1].data is None and jobs[2].data == files[2].read_bytes()
    with pytest.raises(RowInvalid) as raised:
        await reader.read_whole(jobs[1])
    assert raised.value.code == "FILE_UNREADABLE" and "gone.bin" in str(raised.value)


def test_the_allocator_keeps_big_buffers_on_glibc() -> None:
    # A process of its own: the setting is process-wide.
    code = "from bulk_uploader.allocator import keep_big_buffers; print(keep_big_buffers())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    glibc = (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    assert done.stdout.strip() == str(glibc)


@pytest.mark.parametrize("stat_said", [0, 1000, 36_000, 41_000, 10**6])
def test_a_file_is_read_whole_and_one_that_changed_since_its_check_is_refused(tmp_path: Path, stat_said: int) -> None:
    # The row's size comes from validation's stat; the file may have grown or shrunk since.
    path = tmp_path / "grown.bin"
    data = os.urandom(41_000)
    path.write_bytes(data)
    if stat_said == len(data):
        assert reader._read_file(str(path), stat_said) == data
    else:
        with pytest.raises(reader.FileChanged, match=f"{stat_said} bytes then, 41000 now"):
            reader._read_file(str(path), stat_said)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    assert reader._read_file(big, 3 * 1024 * 1024 + 7) == big.read_bytes()
    mtime = big.stat().st_mtime_ns
    os.utime(big, ns=(mtime + 10**9, mtime + 10**9))  # rewritten to the same size
    with pytest.raises(reader.FileChanged, match="modified since"):
        reader._read_file(big, 3 * 1024 * 1024 + 7, mtime)


async def test_a_streamed_file_that_grew_since_its_check_is_refused_after_its_last_chunk(tmp_path: Path) -> None:
    # Appended to after validation's stat: every chunk of the checked size comes, and the end says so.
    path = tmp_path / "growing.bin"
    data = os.urandom(5000)
    path.write_bytes(data)
    job = jobs_for([path])[0]
    job.size = 4000
    pieces = []
    with pytest.raises(RowInvalid, match="4000 bytes then, 5000 now"):
        async for piece, size in reader.read_chunks(job, 1024):
            pieces.append(bytes(piece[len(piece) - size :]))
    assert b"".join(pieces) == data[:4000]


async def test_a_dry_run_reads_heads_in_batches_and_each_row_keeps_its_own_answer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bulk_uploader import samples
    from bulk_uploader.transcode import Plan

    good, text, gone, bug = (tmp_path / f"{name}.wav" for name in ("good", "text", "gone", "bug"))
    good.write_bytes(samples.wav(16_000))
    bug.write_bytes(samples.wav(8_000))
    text.write_text("not audio at all" * 20)
    gone.write_bytes(samples.wav(4_000))
    jobs = jobs_for([good, text, gone, bug])
    gone.unlink()  # after its row was checked
    original, threads = reader.plan_audio, []

    def watched(job: Job, transcode: bool, data: bytes | None = None) -> Plan:
        threads.append(threading.get_ident())
        if job.path == bug:
            raise KeyError("a fault met by this row only")
        return original(job, transcode, data)

    monkeypatch.setattr(reader, "plan_audio", watched)
    heads = reader.HeadReader(budget=60.0)
    await heads(jobs)
    assert isinstance(jobs[0].plan, Plan) and jobs[0].plan.info.format.value == "wav"
    assert isinstance(jobs[1].plan, RowInvalid) and isinstance(jobs[2].plan, RowInvalid)
    assert jobs[2].plan.code == "FILE_UNREADABLE" and isinstance(jobs[3].plan, KeyError)
    assert threads == [threading.get_ident()] * 4 and heads.batches_in_thread == 0  # quick: on the event loop
    # With --transcode the decoder may be asked: every batch in a thread, one hop per batch.
    converting = reader.HeadReader(transcode=True, budget=60.0)
    await converting(jobs_for([good, good]))
    await converting(jobs_for([good]))
    assert threading.get_ident() not in threads[4:] and len(threads) == 7 and converting.batches_in_thread == 2
