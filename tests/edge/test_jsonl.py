"""The one JSONL writer on a disk that fills up and empties again, and the one tolerant reader.

``FullDisk`` is a file system with a number of bytes free: the writer's injected opener. A
write that does not fit writes what fits and reports it (a short write, as the kernel does),
the next one raises ENOSPC; freeing bytes is the space coming back. Timing through a
``ManualClock``: the retry delays are the writer's ``Backoff``, never slept.
"""

import errno
import json
import logging
import os

import pytest

from edge.core.clock import ManualClock
from edge.core.errors import ConfigError, OutputError
from edge.core.jsonl import JsonlWriter, read_jsonl
from edge.core.reconnect import Backoff


class FullDisk:
    """``free`` bytes left; ``opener`` for ``JsonlWriter``. ``writes`` counts the write calls that reached it."""

    def __init__(self, free: int, truncate_fails: bool = False):
        self.free = free
        self.truncate_fails = truncate_fails
        self.writes = 0
        self.opens = 0

    def opener(self, path):
        self.opens += 1
        return _FullDiskFile(self, path)


class _FullDiskFile:
    def __init__(self, disk: FullDisk, path):
        self.disk = disk
        self.f = open(path, "a+b", buffering=0)

    def write(self, data):
        self.disk.writes += 1
        if self.disk.free <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = self.f.write(bytes(data[:self.disk.free]))
        self.disk.free -= n
        return n

    def truncate(self, size):
        if self.disk.truncate_fails:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        before = self.f.seek(0, os.SEEK_END)
        self.f.truncate(size)
        self.disk.free += before - size
        return size

    def seekable(self):
        return True

    def readable(self):
        return True

    def seek(self, *a):
        return self.f.seek(*a)

    def read(self, n=-1):
        return self.f.read(n)

    def close(self):
        self.f.close()


def _writer(path, disk, clock, **kw):
    return JsonlWriter(path, what="test log", goes_on="the test goes on", clock=clock, opener=disk.opener,
                       backoff=Backoff(1.0, 8.0), **kw)


def _messages(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_number_that_is_not_finite_is_written_as_null_and_the_line_reads_back(tmp_path):
    """NaN / Infinity are not JSON: a reader (edge-replay, jq) would refuse the whole line."""
    path = tmp_path / "log.jsonl"
    w = JsonlWriter(path, clock=ManualClock())
    w.write({"lat": float("nan"), "fix": {"kmh": float("inf"), "xs": [1.5, float("-inf")]}, "n": 3})
    w.close()
    assert "NaN" not in path.read_text() and "Infinity" not in path.read_text()
    assert read_jsonl(path, "log") == [{"lat": None, "fix": {"kmh": None, "xs": [1.5, None]}, "n": 3}]


def test_a_full_disk_loses_whole_lines_counts_them_and_resumes_with_a_gap_line(tmp_path, caplog):
    path = tmp_path / "log.jsonl"
    clock = ManualClock(start_ns=0)
    disk = FullDisk(free=100)
    w = _writer(path, disk, clock)
    w.write({"i": 0, "pad": "x" * 40})  # 50 bytes: fits
    w.write({"i": 1, "pad": "x" * 60})  # 70 bytes, 50 free: half written, then cut back
    assert path.read_bytes().count(b"\n") == 1 and path.read_bytes().endswith(b"\n")
    for i in range(2, 6):  # within the first retry delay (1 s): not even tried
        clock.advance(0.1)
        w.write({"i": i})
    assert disk.writes == 3  # 1 + the short write and the ENOSPC after it
    clock.advance(1.0)
    w.write({"i": 6, "pad": "x" * 60})  # the retry: still full, cut back, next delay 2 s
    assert disk.writes == 5 and w.lines_lost == 6
    clock.advance(1.5)
    w.write({"i": 7})  # inside the doubled delay: lost without trying
    assert disk.writes == 5
    disk.free = 10_000  # space comes back
    clock.advance(1.0)
    w.write({"i": 8})
    w.write({"i": 9})
    w.close()
    lines = read_jsonl(path, "test log")
    assert [x.get("i") for x in lines] == [0, None, 8, 9]
    gap = lines[1]
    assert gap["event"] == "gap" and gap["lines_lost"] == 7 and gap["lost_from_ns"] == 0
    assert gap["t_mono_ns"] == clock.now_ns() and gap["wall"].endswith("Z")
    assert w.lines_lost == 7 and w.gaps == 1
    warnings = _messages(caplog)
    assert len(warnings) == 2, warnings
    assert "test log" in warnings[0] and "cannot be written (No space left on device)" in warnings[0]
    assert "the test goes on" in warnings[0]
    assert "writing resumed after 7 line(s) lost" in warnings[1]


def test_a_first_line_the_file_does_not_take_is_the_owners_start_up_error(tmp_path):
    """/dev/full opens fine and takes no byte: the dry-run state file ran on with warnings and exit 0."""
    disk = FullDisk(free=0)
    w = _writer(tmp_path / "state.jsonl", disk, ManualClock())
    with pytest.raises(ConfigError, match="cannot write the test log .*No space left on device"):
        w.write({"event": "open"}, at_start=True)
    assert w.lines_lost == 0


def test_the_state_file_on_dev_full_is_exit_6():
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    from edge.outputs.dryrun import DryRunOutput

    with pytest.raises(OutputError, match="'/dev/full': No space left on device") as e:
        DryRunOutput(channels=1, state_file="/dev/full")
    assert e.value.exit_code == 6


def test_lines_still_lost_at_close_are_warned_about(tmp_path, caplog):
    clock = ManualClock()
    w = _writer(tmp_path / "log.jsonl", FullDisk(free=0), clock)
    for i in range(3):
        w.write({"i": i})
        clock.advance(5.0)
    w.close()
    w.write({"after": "close"})  # dropped, no error
    assert w.lines_lost == 3 and (tmp_path / "log.jsonl").read_bytes() == b""
    assert "3 line(s) lost at the end of the run" in _messages(caplog)[-1]


def test_the_owner_adds_its_fields_to_the_gap_line(tmp_path):
    clock = ManualClock()
    disk = FullDisk(free=0)
    w = _writer(tmp_path / "s.jsonl", disk, clock, gap_fields=lambda: {"state": [True, False]})
    w.write({"a": 1})
    disk.free = 1000
    clock.advance(2.0)
    w.write({"a": 2})
    w.close()
    gap, line = read_jsonl(tmp_path / "s.jsonl", "s")
    assert gap["event"] == "gap" and gap["state"] == [True, False] and line == {"a": 2}


def test_a_cut_line_that_cannot_be_undone_is_removed_when_the_file_is_reopened(tmp_path, caplog):
    path = tmp_path / "log.jsonl"
    clock = ManualClock()
    disk = FullDisk(free=30, truncate_fails=True)
    w = _writer(path, disk, clock)
    w.write({"i": 0, "pad": "x" * 40})  # a short write; truncating it fails: the file is dropped
    assert not path.read_bytes().endswith(b"\n") and disk.opens == 1
    disk.free, disk.truncate_fails = 1000, False
    clock.advance(1.0)
    w.write({"i": 1})  # reopened: the cut line is removed first
    w.close()
    assert disk.opens == 2
    assert [x.get("i") for x in read_jsonl(path, "log")] == [None, 1]  # the gap line, then line 1
    assert any("ended with a cut line" in m for m in _messages(caplog))


def test_appending_after_a_run_that_was_cut_off_mid_line(tmp_path, caplog):
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"i": 0}\n{"i": 1, "cut her')
    w = JsonlWriter(path, what="frame log")
    w.write({"i": 2})
    w.close()
    assert path.read_bytes() == b'{"i": 0}\n{"i":2}\n'
    assert "frame log" in caplog.text and "ended with a cut line (17 bytes" in caplog.text


def test_a_file_without_any_newline_near_its_end_is_not_ours_to_cut(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"\n" + b"x" * (1 << 20) + b"y")  # more than 1 MiB after the last newline
    with pytest.raises(ConfigError, match="not a JSON-lines file"):
        JsonlWriter(path, what="frame log")
    assert path.stat().st_size == (1 << 20) + 2  # untouched


@pytest.mark.parametrize("content", [
    b"[spray]\nlanes = 4\nspeed_kmh = 3.0",  # a config given as the state file: its last line was cut away
    b"# weed-detector config\n[spray]\nlanes = 4\n",
    b"[1, 2]\n",  # JSON, not an object
    b"\xff\xd8\xff\xe0 a photo\n\x89",
    b"\n\x00\x00\nframe,role\n",
])
def test_a_file_whose_first_line_is_not_a_json_object_is_left_untouched(tmp_path, content):
    path = tmp_path / "given.txt"
    path.write_bytes(content)
    with pytest.raises(OutputError, match="its first line is not a JSON object"):
        JsonlWriter(path, what="state file", error=OutputError)
    assert path.read_bytes() == content


@pytest.mark.parametrize("content, kept", [
    (b'{"i": 0}\n\x00\x00\x00\x00', b'{"i": 0}\n'),  # what a power loss can leave of the line being written
    (b'{"i": 0}\n\x00\x00\n', b'{"i": 0}\n\x00\x00\n'),
    (b'{"i": 0}\n\n', b'{"i": 0}\n\n'),
    (b"\n", b"\n"),
    # damage after the first line does not stop a run from starting (the review: a restart loop at exit 3)
    (b'{"i": 0}\n{"a":\x00\x00,"b":2}\n', b'{"i": 0}\n{"a":\x00\x00,"b":2}\n'),  # a torn page
    (b'{"i": 0}\n\xde\xad garbage', b'{"i": 0}\n'),  # a cut line of a stale block
    (b'{"i": 0}\nlanes = 4\n', b'{"i": 0}\nlanes = 4\n'),
    (b'\x00\x00{"i": 0}\n', b'\x00\x00{"i": 0}\n'),
])
def test_blank_nul_filled_and_damaged_ends_of_a_log_are_appended_after(tmp_path, content, kept):
    path = tmp_path / "log.jsonl"
    path.write_bytes(content)
    w = JsonlWriter(path, what="frame log")
    w.write({"i": 1})
    w.close()
    assert path.read_bytes() == kept + b'{"i":1}\n'


def test_a_pipe_or_a_write_only_file_is_written_too(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # someone follows the log through a pipe
    try:
        w = JsonlWriter(fifo, what="frame log")
        w.write({"i": 1})
        w.close()
        assert os.read(reader, 100) == b'{"i":1}\n'
    finally:
        os.close(reader)
    locked = tmp_path / "write-only.jsonl"  # a file we may append to but not read (what open_append falls back to)
    locked.write_bytes(b'{"i":0}\n')
    w = JsonlWriter(locked, what="frame log", opener=lambda p: open(p, "ab", buffering=0))
    w.write({"i": 1})
    w.close()
    assert read_jsonl(locked, "frame log") == [{"i": 0}, {"i": 1}]


def test_a_pipe_whose_reader_stalls_loses_whole_lines_and_never_blocks(tmp_path, caplog):
    """A FIFO given as the log whose reader stops reading: the writer does not block when the pipe is full; the
    lines that do not fit are counted as lost; what the reader reads at last is whole lines, in order."""
    import threading

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # follows the log, then stalls
    done = threading.Event()
    writer = JsonlWriter(fifo, what="frame log", clock=ManualClock())

    def run():  # in a thread, so that a blocking write fails the test instead of hanging it
        for i in range(400):  # 400 x ~1 KB: far more than a pipe holds (64 KiB)
            writer.write({"i": i, "pad": "x" * 1000})
        done.set()

    try:
        with caplog.at_level(logging.WARNING):
            threading.Thread(target=run, daemon=True).start()
            assert done.wait(60), "the writer blocked on a full pipe"
        assert writer.lines_lost > 300 and "its reader is not keeping up" in caplog.text
        data = b""
        while True:
            try:
                chunk = os.read(reader, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
    finally:
        writer.close()
        os.close(reader)
    lines = data.splitlines()
    assert len(lines) > 10 and data.endswith(b"\n") and [json.loads(x)["i"] for x in lines] == list(range(len(lines)))


def test_long_lines_into_a_pipe_are_never_glued_together(tmp_path):
    """Lines longer than a pipe takes whole (PIPE_BUF, 4 KiB): one the pipe took part of is finished first, so what
    the reader reads, across a stall, a catch-up and the writer's retry with its gap line, is whole JSON lines."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    clock = ManualClock()
    writer = JsonlWriter(fifo, what="frame log", clock=clock)

    def drain() -> bytes:
        out = b""
        while True:
            try:
                chunk = os.read(reader, 1 << 16)
            except BlockingIOError:
                return out
            if not chunk:
                return out
            out += chunk

    try:
        data = b""
        for i in range(60):  # 60 x 6 kB: the pipe (64 KiB) fills, part-written lines among them
            writer.write({"i": i, "pad": "x" * 6000})
        data += drain()  # the reader catches up
        clock.advance(60)  # past the writer's retry delay
        for i in range(60, 64):
            writer.write({"i": i, "pad": "x" * 6000})
        data += drain()
    finally:
        writer.close()
        data += drain()
        os.close(reader)
    lines = [json.loads(x) for x in data.splitlines()]  # every line whole: none glued to the next
    got = [x["i"] for x in lines if "i" in x]
    assert got == sorted(got) and got[0] == 0 and 63 in got and writer.lines_lost > 0
    assert any(x.get("event") == "gap" for x in lines)


def test_rotation_goes_on_after_a_gap(tmp_path):
    path = tmp_path / "log.jsonl"
    clock = ManualClock()
    disk = FullDisk(free=0)
    w = _writer(path, disk, clock, max_bytes=200, backups=2)
    w.write({"i": 0})
    disk.free = 10_000
    clock.advance(1.0)
    for i in range(1, 30):
        w.write({"i": i, "pad": "x" * 20})
    w.close()
    parts = [tmp_path / "log.jsonl.2", tmp_path / "log.jsonl.1", path]
    assert all(p.stat().st_size <= 200 for p in parts) and w.rotations >= 2
    assert read_jsonl(path, "log")[-1]["i"] == 29


@pytest.mark.parametrize("error, make_folder, path_of", [
    (ConfigError, True, lambda d: d),  # a directory where the file should be (fails even as root)
    (ConfigError, True, lambda d: d / "file" / "log.jsonl"),  # a file where the folder should be
    (OutputError, False, lambda d: d / "missing" / "log.jsonl"),  # no folder, and none is made
])
def test_a_file_that_cannot_be_opened_at_start_is_the_owners_error(tmp_path, error, make_folder, path_of):
    (tmp_path / "file").write_text("")
    with pytest.raises(error) as e:
        JsonlWriter(path_of(tmp_path), what="test log", fix="pick another path", error=error, make_folder=make_folder)
    assert str(e.value).startswith(f"cannot write the test log '{path_of(tmp_path)}': ")
    assert str(e.value).endswith("— pick another path") and "\n" not in str(e.value)


# -- the reader ----------------------------------------------------------------------------
@pytest.mark.parametrize("data, expect, cut", [
    (b'{"a":1}\n{"a":2}\n', [{"a": 1}, {"a": 2}], False),
    (b'{"a":1}\n\n  \n{"a":2}', [{"a": 1}, {"a": 2}], False),  # blank lines; a whole last line, no newline
    (b'{"a":1}\r\n{"a":2}\r\n', [{"a": 1}, {"a": 2}], False),  # written on Windows
    (b'{"a":1}\n{"a":2,"b":[1,', [{"a": 1}], True),  # cut mid-object (a full disk, a kill): skipped
    (b'{"a":1}\n{"a":"\xc3', [{"a": 1}], True),  # cut inside a UTF-8 character
    (b'', [], False),
])
def test_read_jsonl_skips_only_a_cut_last_line(tmp_path, caplog, data, expect, cut):
    p = tmp_path / "f.jsonl"
    p.write_bytes(data)
    assert read_jsonl(p, "spray log") == expect
    assert ("the last line (line 2) is cut" in caplog.text) == cut


@pytest.mark.parametrize("data, words", [
    (b'{"a":1}\n{"a":2,"b":[1,\n{"a":3}\n', "line 2 is not JSON: "),  # a cut line in the middle stays an error
    (b'{"a":1,\n', "line 1 is not JSON"),  # a bad last line that ends with a newline is not a cut line
    (b'{"a":1}\n{"a":"\xff\xfe"}\n{"a":3}\n', "line 2 is not UTF-8 (byte 7)"),
    (b'[' * 100_000 + b']' * 100_000 + b'\n{"a":1}\n', "line 1 is not JSON: nested too deeply"),
    (b'{"a":"tab\there"}\n{"a":1}\n', "line 1 is not JSON: Invalid control character"),
    (b'{"a":' + b'9' * 5000 + b'}\n{"a":1}\n', "line 1 is not JSON: "),  # an integer too long to convert
])
def test_read_jsonl_names_the_file_and_the_bad_line(tmp_path, data, words):
    p = tmp_path / "f.jsonl"
    p.write_bytes(data)
    with pytest.raises(ConfigError) as e:
        read_jsonl(p, "spray log")
    assert str(e.value).startswith(f"spray log {p} {words}") and "\n" not in str(e.value)


def test_read_jsonl_parse_errors_name_the_line(tmp_path):
    p = tmp_path / "f.jsonl"
    p.write_text('{"a":1}\n[]\n')

    def obj(v):
        if not isinstance(v, dict):
            raise ValueError("not an object")
        return v

    with pytest.raises(ConfigError, match=r"f.jsonl line 2: not an object — one JSON object per line"):
        read_jsonl(p, "spray log", obj)
    with pytest.raises(ConfigError, match="the spray log '.*missing.jsonl' does not exist"):
        read_jsonl(tmp_path / "missing.jsonl", "spray log")


@pytest.mark.parametrize("path, words", [
    ("/dev/zero", "is a character device"),  # read whole, it filled the memory
    (None, "more than the 100 bytes"),
])
def test_a_jsonl_file_read_back_is_a_regular_file_of_bounded_size(path, words, tmp_path):
    if path is None:
        path = tmp_path / "big.jsonl"
        path.write_text('{"a": 1}\n' * 20)
    with pytest.raises(ConfigError, match=words):
        read_jsonl(path, "spray log", max_bytes=100)


def test_a_hand_written_files_last_line_is_not_taken_for_a_cut_one(tmp_path, caplog):
    p = tmp_path / "truth.jsonl"
    p.write_text('{"lane": 0, "distance_cm": 10}\n{"lane": 2, "distance_cm": 90,}')  # a typo, no newline after it
    assert read_jsonl(p, "spray log") == [{"lane": 0, "distance_cm": 10}]  # a run's file: skipped, warned
    with pytest.raises(ConfigError, match="truth.jsonl line 2 is"):
        read_jsonl(p, "ground-truth file", written_by_a_run=False)


def test_a_writer_writes_while_it_has_a_file_and_is_open(tmp_path):
    assert not JsonlWriter(None, what="log").writes  # no path: nothing goes anywhere
    w = JsonlWriter(tmp_path / "a.jsonl", what="log")
    assert w.writes
    w.close()
    assert not w.writes
