"""What the source-digest index trusts: a source replaced by one with the same size and mtime
(``cp -p``, ``rsync -a``, ``tar x``) is hashed again (its ctime or inode changed), ``rehash``
ignores the index, a full disk stops the run with 'out of space' and where (exit 1, no
traceback, nothing half-written kept) and the same command completes once there is space,
and a damaged or older index is started afresh. Only the last test starts Ray (a child CLI)."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pipeline_helpers import TEST_MODEL, cli_run_process, make_manifest

from pipeline import digests as digests_module
from pipeline.digests import DigestIndexFull, SourceDigests
from pipeline.errors import RunFolderFull

OLD, NEW = b"old product photo", b"new product photo"  # same size


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _indexed(tmp_path: Path) -> tuple[Path, Path, os.stat_result]:
    src, index = tmp_path / "src" / "a.png", tmp_path / "index.sqlite"
    src.parent.mkdir()
    src.write_bytes(OLD)
    first = SourceDigests(index)
    assert first.digest_many([str(src)])[str(src)] == sha(OLD)
    first.close()
    return src, index, src.stat()


def _replace_like(tool: str, src: Path, before: os.stat_result, tmp_path: Path) -> None:
    """Put NEW where ``src`` is, with its old mtime, as ``tool`` would."""
    staged = tmp_path / "incoming" / src.name
    staged.parent.mkdir(exist_ok=True)
    staged.write_bytes(NEW)
    os.utime(staged, ns=(before.st_atime_ns, before.st_mtime_ns))
    for _ in range(200):  # the kernel's ctime clock is coarse: wait until it has ticked
        if time.time_ns() > before.st_ctime_ns + 20_000_000:
            break
        time.sleep(0.01)
    if tool == "cp -p":  # in place: same inode, contents rewritten, mtime copied
        subprocess.run(["cp", "-p", str(staged), str(src)], check=True)
    else:  # rsync -a / tar x: a new file renamed over the old one
        os.replace(staged, src)
    after = src.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


@pytest.mark.parametrize("tool", ["cp -p", "rsync -a"])
def test_a_source_replaced_with_the_same_size_and_mtime_is_hashed_again(
        tmp_path: Path, tool: str) -> None:
    src, index, before = _indexed(tmp_path)
    _replace_like(tool, src, before, tmp_path)
    again = SourceDigests(index)
    assert again.digest_many([str(src)])[str(src)] == sha(NEW)
    assert again.hashed == 1
    again.close()
    third = SourceDigests(index)  # and the new digest is what the index remembers now
    assert third.digest_many([str(src)])[str(src)] == sha(NEW) and third.hashed == 0
    third.close()


def test_rehash_ignores_the_index_and_refreshes_it(tmp_path: Path) -> None:
    src, index, _ = _indexed(tmp_path)
    with sqlite3.connect(index) as db:  # an entry that lies (bytes changed under the fs)
        db.execute("UPDATE digests SET sha256 = ?", ("0" * 64,))
    db.close()
    trusting = SourceDigests(index)
    assert trusting.digest_many([str(src)])[str(src)] == "0" * 64 and trusting.hashed == 0
    trusting.close()
    rehashing = SourceDigests(index, rehash=True)
    assert rehashing.digest_many([str(src)])[str(src)] == sha(OLD) and rehashing.hashed == 1
    rehashing.close()
    after = SourceDigests(index)
    assert after.digest_many([str(src)])[str(src)] == sha(OLD) and after.hashed == 0
    after.close()


class _FullOn:
    """sqlite3.connect whose connections fail statements starting with ``verb`` as a full
    disk does (SQLITE_FULL)."""

    def __init__(self, verb: str) -> None:
        self.verb = verb
        self.real = sqlite3.connect

    def __call__(self, *args, **kwargs) -> sqlite3.Connection:
        verb = self.verb

        class Full(sqlite3.Connection):
            def _check(self, sql: str) -> None:
                if sql.lstrip().upper().startswith(verb):
                    raise sqlite3.OperationalError("database or disk is full")

            def execute(self, sql, *a):
                self._check(sql)
                return super().execute(sql, *a)

            def executemany(self, sql, *a):
                self._check(sql)
                return super().executemany(sql, *a)

        return self.real(*args, factory=Full, **kwargs)


def test_a_full_disk_creating_the_index_is_out_of_space_naming_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(digests_module.sqlite3, "connect", _FullOn("CREATE"))
    index = tmp_path / "store" / "index" / "source_digests.sqlite"
    with pytest.raises(DigestIndexFull) as err:
        SourceDigests(index)
    assert isinstance(err.value, RunFolderFull)  # the CLIs' clean exit 1
    assert "out of space" in str(err.value) and str(index) in str(err.value)
    assert "database or disk is full" in str(err.value)


def test_a_full_disk_writing_digests_keeps_nothing_half_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sources = []
    for i in range(3):
        path = tmp_path / f"s{i}.png"
        path.write_bytes(b"source %d" % i)
        sources.append(str(path))
    index = tmp_path / "index.sqlite"
    monkeypatch.setattr(digests_module.sqlite3, "connect", _FullOn("INSERT"))
    full = SourceDigests(index)
    with pytest.raises(DigestIndexFull, match="out of space"):
        full.digest_many(sources)
    full.close()
    monkeypatch.undo()
    with sqlite3.connect(index) as db:
        assert db.execute("SELECT COUNT(*) FROM digests").fetchone() == (0,)
    db.close()
    freed = SourceDigests(index)
    assert freed.digest_many(sources) == {s: sha(Path(s).read_bytes()) for s in sources}
    assert freed.hashed == 3
    freed.close()


@pytest.mark.parametrize("damage", ["garbage file", "old schema"])
def test_a_damaged_or_older_index_is_started_afresh(tmp_path: Path, damage: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "a.png"
    src.write_bytes(OLD)
    index = tmp_path / "index.sqlite"
    if damage == "garbage file":
        index.write_bytes(b"this is not an sqlite database at all" * 100)
    else:  # the (size, mtime_ns) index of earlier versions, with a stale digest in it
        st = src.stat()
        with sqlite3.connect(index) as db:
            db.execute("CREATE TABLE digests (path TEXT PRIMARY KEY, size INTEGER NOT NULL, "
                       "mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL)")
            db.execute("INSERT INTO digests VALUES (?, ?, ?, ?)",
                       (str(src), st.st_size, st.st_mtime_ns, "0" * 64))
        db.close()
    digests = SourceDigests(index)
    assert digests.digest_many([str(src)])[str(src)] == sha(OLD) and digests.hashed == 1
    digests.close()
    if damage == "garbage file":
        assert "was damaged; moved to" in capsys.readouterr().err
        assert len(list(tmp_path.glob("index.sqlite.damaged-*"))) == 1


def test_cli_stops_with_exit_1_on_a_full_index_disk_and_the_same_command_completes_later(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from jobs import cli as entry  # the installed ``kontext-batch``

    manifest = make_manifest(tmp_path / "m", products=2, variants=1)
    out = tmp_path / "out"
    argv = ["run", str(manifest), "--out", str(out), "--model", TEST_MODEL, "--device", "cpu",
            "--batch-size", "2", "--actors", "1", "--no-report", "--quiet"]
    monkeypatch.setattr(digests_module.sqlite3, "connect", _FullOn("CREATE"))
    code = entry.main(argv)
    captured = capsys.readouterr()
    assert code == 1, captured
    assert "out of space" in captured.err and "source_digests.sqlite" in captured.err
    assert "run the same command again to resume" in captured.err
    assert "Traceback" not in captured.err + captured.out
    monkeypatch.undo()
    child = cli_run_process(manifest, out)  # the same command, space freed
    output = child.communicate(timeout=300)[0].decode()
    assert child.returncode == 0, output
    runs = list((out / "runs").iterdir())
    assert len(runs) == 1  # the stopped run was resumed, not a new one started
    rows = pq.read_table(runs[0] / "results.parquet").to_pylist()
    assert [r["status"] for r in rows] == ["done", "done"]
    assert all(Path(r["output_uri"]).is_file() for r in rows)
