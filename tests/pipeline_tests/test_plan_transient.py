"""Planning when reading a source fails for a moment (EIO, ESTALE, an S3 503): the digests try
again with backoff, and a row whose source stays unreadable is left for a re-run, not failed for
good. A wrong path (missing, a directory, no permission) stays a bad row. No Ray."""

from __future__ import annotations

import builtins
import errno
import hashlib
import os
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pyarrow.fs as pafs
import pytest
from pipeline_helpers import make_manifest, read_records
from test_pipeline_plan import plan as plan_with

from pipeline import digests as digests_module
from pipeline.digests import SourceDigests, source_error
from pipeline.errors import BAD_ROW, TRANSIENT, BadRowError, TransientError
from pipeline.outcomes import Outcomes
from pipeline.plan import Plan
from pipeline.reports.report_doc import analyse_run

FLAKY = "product_1.png"  # the source the injected failures hit (rows 2 and 3)


def plan(tmp_path: Path, manifest: Path, digests: SourceDigests) -> tuple[Plan, Outcomes, Path]:
    return plan_with(tmp_path, manifest, digests=digests)


class Faults:
    """Makes ``os.stat`` and/or ``open`` (as pipeline.digests calls them) raise OSError(EIO)
    for the flaky source: the first ``times`` calls, or every call when ``times`` is None."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, stat: int | None = 0,
                 read: int | None = 0, error: int = errno.EIO) -> None:
        self.limits = {"stat": stat, "read": read}
        self.calls = {"stat": 0, "read": 0}
        self.error = error
        real_stat, real_open = os.stat, builtins.open

        def fake_stat(path, *args, **kwargs):
            self._maybe_fail("stat", path)
            return real_stat(path, *args, **kwargs)

        def fake_open(path, *args, **kwargs):
            self._maybe_fail("read", path)
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(os, "stat", fake_stat)
        monkeypatch.setattr(digests_module, "open", fake_open, raising=False)

    def _maybe_fail(self, what: str, path) -> None:
        name = os.fsdecode(path) if isinstance(path, str | bytes | os.PathLike) else ""
        if not name.endswith(FLAKY):
            return
        self.calls[what] += 1
        limit = self.limits[what]
        if limit is None or self.calls[what] <= limit:
            raise OSError(self.error, os.strerror(self.error), name)


def fast_digests(index: Path | None = None) -> SourceDigests:
    return SourceDigests(index, backoff_s=0.001)


@pytest.mark.parametrize("exc, error_class, words", [
    (FileNotFoundError(errno.ENOENT, "No such file or directory"), BAD_ROW, "not found"),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory"), BAD_ROW, "not found"),
    (IsADirectoryError(errno.EISDIR, "Is a directory"), BAD_ROW, "is a directory"),
    (PermissionError(errno.EACCES, "Permission denied"), BAD_ROW, "permission denied"),
    (OSError("When getting information for key 'a.png' in bucket 'b': AWS Error ACCESS_DENIED "
             "during HeadObject operation: No response body."), BAD_ROW, "permission denied"),
    (OSError(errno.EIO, "Input/output error"), TRANSIENT, "may pass"),
    (OSError(errno.ESTALE, "Stale file handle"), TRANSIENT, "Stale file handle"),
    (TimeoutError(errno.ETIMEDOUT, "Connection timed out"), TRANSIENT, "timed out"),
    (OSError("When getting information for key 'a.png' in bucket 'b': AWS Error SLOW_DOWN "
             "during HeadObject operation: Please reduce your request rate. (HTTP 503)"),
     TRANSIENT, "SLOW_DOWN"),
])
def test_source_errors_are_bad_rows_only_when_the_path_is_wrong(exc: OSError, error_class: str,
                                                                words: str) -> None:
    error = source_error("s3://b/a.png", exc)
    assert error.error_class == error_class
    assert "'s3://b/a.png'" in str(error) and words in str(error)


def test_a_source_that_fails_twice_then_reads_is_planned_like_any_other(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = make_manifest(tmp_path / "m", products=2, variants=2)
    clean, clean_outcomes, _ = plan(tmp_path / "clean", manifest, fast_digests())
    faults = Faults(monkeypatch, stat=2, read=2)
    result, outcomes, run_dir = plan(tmp_path, manifest, fast_digests(tmp_path / "idx.sqlite"))
    assert faults.calls == {"stat": 3, "read": 3}  # two failures each, then success
    assert result.failed == result.deferred == 0
    assert sorted(t.row_index for t in result.tasks) == [0, 1, 2, 3]
    assert outcomes.key == clean_outcomes.key  # same digest, so the same cache keys
    assert set(outcomes.status) == {"not-run"} and set(outcomes.error_class) == {None}
    assert not [r for r in read_records(run_dir) if r["type"] == "attempt"]


def test_a_source_whose_stat_keeps_failing_is_still_hashed_but_not_indexed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = make_manifest(tmp_path / "m", products=2, variants=2)
    faults = Faults(monkeypatch, stat=None)
    index = tmp_path / "idx.sqlite"
    result, outcomes, _ = plan(tmp_path, manifest, fast_digests(index))
    assert faults.calls["stat"] == 3  # tried three times
    assert sorted(t.row_index for t in result.tasks) == [0, 1, 2, 3]
    flaky = next(t for t in result.tasks if t.image.endswith(FLAKY))
    source = manifest.parent / "images" / FLAKY
    assert flaky.image_sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    with sqlite3.connect(index) as db:
        indexed = [p for (p,) in db.execute("SELECT path FROM digests")]
    assert len(indexed) == 1 and not indexed[0].endswith(FLAKY)  # no (size, mtime) to key it


def test_a_source_that_stays_unreadable_is_left_for_a_rerun_not_failed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = make_manifest(tmp_path / "m", products=2, variants=2)
    faults = Faults(monkeypatch, stat=None, read=None)
    result, outcomes, run_dir = plan(tmp_path, manifest, fast_digests())
    assert faults.calls == {"stat": 3, "read": 3}
    assert result.deferred == 2 and result.failed == 0
    assert sorted(t.row_index for t in result.tasks) == [0, 1]
    assert outcomes.status == ["not-run", "not-run", "not-run", "not-run"]
    assert outcomes.error_class == [None, None, TRANSIENT, TRANSIENT]
    for i in (2, 3):
        assert "Input/output error" in outcomes.reason[i] and FLAKY in outcomes.reason[i]
        assert "running the same command again retries this row" in outcomes.reason[i]
    attempts = [r for r in read_records(run_dir) if r["type"] == "attempt"]
    assert [(r["row_index"], r["outcome"], r["error_class"]) for r in attempts] == [
        (2, "retry-scheduled", TRANSIENT), (3, "retry-scheduled", TRANSIENT)]
    # The ledger-derived report agrees with the results: unfinished, not failed.
    analysis = analyse_run(run_dir)
    assert analysis.figures["rows"]["failed"] == 0
    assert analysis.figures["rows"]["unfinished"] == 4  # nothing ran in this planning-only run
    assert analysis.rows["p1-v0"].status == "not-run"
    assert analysis.rows["p1-v0"].error_class == TRANSIENT

    # Started again once the storage is back, the same run plans the rows as tasks.
    monkeypatch.undo()
    again, outcomes2, _ = plan(tmp_path, manifest, fast_digests())
    assert sorted(t.row_index for t in again.tasks) == [0, 1, 2, 3]
    assert again.deferred == 0 and outcomes2.error_class == [None] * 4


def test_a_missing_source_is_still_a_bad_row_and_is_not_retried(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = make_manifest(tmp_path / "m", products=2, variants=2)
    faults = Faults(monkeypatch, stat=None, error=errno.ENOENT)
    result, outcomes, run_dir = plan(tmp_path, manifest, fast_digests())
    assert faults.calls["stat"] == 1
    assert result.failed == 2 and result.deferred == 0
    assert outcomes.status == ["not-run", "not-run", "failed", "failed"]
    assert outcomes.error_class[2:] == [BAD_ROW, BAD_ROW]
    assert "not found" in outcomes.reason[2]
    assert {r["outcome"] for r in read_records(run_dir) if r["type"] == "attempt"} == {
        "failed-permanent"}


class _FlakyRemote:
    """A pyarrow filesystem whose HEAD (get_file_info) and GET (open_input_stream) fail with
    the S3 503 text ``head_failures`` / ``get_failures`` times (None: always)."""

    def __init__(self, head_failures: int | None, get_failures: int | None) -> None:
        self.local = pafs.LocalFileSystem()
        self.left = {"head": head_failures, "get": get_failures}
        self.calls = {"head": 0, "get": 0}

    def _maybe_fail(self, what: str) -> None:
        self.calls[what] += 1
        left = self.left[what]
        if left is None or self.calls[what] <= left:
            raise OSError("AWS Error SLOW_DOWN during HeadObject operation: Please reduce your "
                          "request rate. (HTTP 503)")

    def get_file_info(self, path: str) -> pafs.FileInfo:
        self._maybe_fail("head")
        return self.local.get_file_info(path)

    def open_input_stream(self, path: str):
        self._maybe_fail("get")
        return self.local.open_input_stream(path)


def _remote(monkeypatch: pytest.MonkeyPatch, fs: _FlakyRemote) -> None:
    def from_uri(uri: str):
        return fs, uri.split("://", 1)[1]

    fake = SimpleNamespace(FileSystem=SimpleNamespace(from_uri=from_uri),
                           FileType=pafs.FileType)
    monkeypatch.setattr(digests_module, "pafs", fake)


def test_remote_503s_are_retried_and_then_transient_never_bad_rows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "a.png"
    source.write_bytes(b"some image bytes")
    uri = f"flaky://{source}"
    fs = _FlakyRemote(head_failures=2, get_failures=1)
    _remote(monkeypatch, fs)
    got = fast_digests().digest_many([uri])
    assert got == {uri: hashlib.sha256(b"some image bytes").hexdigest()}
    assert fs.calls == {"head": 3, "get": 2}

    fs = _FlakyRemote(head_failures=None, get_failures=None)
    _remote(monkeypatch, fs)
    error = fast_digests().digest_many([uri])[uri]
    assert isinstance(error, TransientError) and not isinstance(error, BadRowError)
    assert "503" in str(error)
    assert fs.calls == {"head": 3, "get": 3}

    missing = f"flaky://{tmp_path / 'gone.png'}"
    _remote(monkeypatch, _FlakyRemote(head_failures=0, get_failures=0))
    error = fast_digests().digest_many([missing])[missing]
    assert isinstance(error, BadRowError) and "not found" in str(error)
