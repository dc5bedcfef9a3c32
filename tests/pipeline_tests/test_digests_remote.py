"""Digests of remote sources (s3://, gs://, ...): one filesystem per bucket for a SourceDigests'
lifetime (not a ``from_uri`` per file), stats of a batch in a thread pool, results in the order
given and the same as one at a time, and a flaky source failing alone. No Ray, no network: the
remote filesystem is faked as in test_plan_transient.py."""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote

import pyarrow.fs as pafs
import pytest

from pipeline import digests as digests_module
from pipeline.digests import RemoteFilesystems, SourceDigests
from pipeline.errors import BadRowError, TransientError

SLOW_DOWN = ("AWS Error SLOW_DOWN during HeadObject operation: Please reduce your request rate. "
             "(HTTP 503)")


class Gate:
    """The first ``parties`` callers wait for each other: they only pass when that many are in
    flight at once (else BrokenBarrierError after the timeout); later callers pass freely."""

    def __init__(self, parties: int) -> None:
        self._barrier = threading.Barrier(parties, timeout=20)
        self._lock = threading.Lock()
        self._arrived = 0

    def pass_(self) -> None:
        with self._lock:
            self._arrived += 1
            wait = self._arrived <= self._barrier.parties
        if wait:
            self._barrier.wait()


class FakeBucket:
    """A bucket of a fake object store, kept in ``root/<bucket>``. ``flaky`` keys fail with an
    S3 503 (HEAD and GET) that many times (None: always); HEADs go through ``gate``."""

    def __init__(self, root: Path, flaky: dict[str, int | None] | None = None,
                 gate: Gate | None = None) -> None:
        self.local = pafs.LocalFileSystem()
        self.root = root
        self.flaky = dict(flaky or {})
        self.heads: Counter[str] = Counter()
        self.gets: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._gate = gate

    def _maybe_fail(self, calls: Counter[str], path: str) -> None:
        with self._lock:
            calls[path] += 1
            n = calls[path]
        left = self.flaky.get(path.split("/", 1)[1], 0)
        if left is None or n <= left:
            raise OSError(SLOW_DOWN)

    def get_file_info(self, path: str) -> pafs.FileInfo:
        if self._gate is not None:
            self._gate.pass_()
        self._maybe_fail(self.heads, path)
        return self.local.get_file_info(str(self.root / path))

    def open_input_stream(self, path: str):
        self._maybe_fail(self.gets, path)
        return self.local.open_input_stream(str(self.root / path))


class FakeStore:
    """``FileSystem.from_uri`` for fake://<bucket>/<key>: a fresh lookup per call, counted."""

    def __init__(self, buckets: dict[str, FakeBucket]) -> None:
        self.buckets = buckets
        self.from_uri_calls: Counter[str] = Counter()

    def from_uri(self, uri: str) -> tuple[FakeBucket, str]:
        rest = uri.split("://", 1)[1].split("?", 1)[0]
        bucket = rest.split("/", 1)[0]
        self.from_uri_calls[bucket] += 1
        return self.buckets[bucket], unquote(rest)  # pyarrow decodes %-escapes the same way


def install(monkeypatch: pytest.MonkeyPatch, store: FakeStore) -> None:
    fake = SimpleNamespace(FileSystem=SimpleNamespace(from_uri=store.from_uri),
                           FileType=pafs.FileType)
    monkeypatch.setattr(digests_module, "pafs", fake)


def make_sources(root: Path, bucket: str, count: int) -> dict[str, bytes]:
    """``count`` objects in ``bucket``: URI -> bytes."""
    folder = root / bucket / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    sources = {}
    for i in range(count):
        data = f"{bucket} image {i}".encode()
        (folder / f"img {i}.png").write_bytes(data)
        sources[f"fake://{bucket}/photos/img%20{i}.png"] = data
    return sources


def fast(**kw) -> SourceDigests:
    return SourceDigests(None, backoff_s=0.001, **kw)


def test_one_filesystem_per_bucket_and_stats_run_concurrently_in_row_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sources = {**make_sources(tmp_path, "b1", 30), **make_sources(tmp_path, "b2", 20)}
    locations = list(sources)
    locations = locations[::2] + locations[1::2] + locations[:5]  # interleaved, with repeats
    gate = Gate(16)  # the first 16 HEADs (either bucket) only pass when all 16 run at once
    store = FakeStore({b: FakeBucket(tmp_path, gate=gate) for b in ("b1", "b2")})
    install(monkeypatch, store)
    digests = fast(stat_threads=16)
    got = digests.digest_many(locations)
    assert list(got) == list(dict.fromkeys(locations))  # row order, each source once
    assert got == {loc: hashlib.sha256(data).hexdigest() for loc, data in sources.items()}
    assert store.from_uri_calls == {"b1": 1, "b2": 1}  # not one per file
    assert sum(b.heads.total() for b in store.buckets.values()) == 50
    # A later batch reuses the same filesystems.
    digests.digest_many(locations[:3])
    assert store.from_uri_calls == {"b1": 1, "b2": 1}

    # One at a time gives the same answer, in the same order.
    serial_store = FakeStore({b: FakeBucket(tmp_path) for b in ("b1", "b2")})
    install(monkeypatch, serial_store)
    serial = fast(stat_threads=1, threads=1).digest_many(locations)
    assert list(serial.items()) == list(got.items())


def test_a_flaky_source_fails_alone_and_is_retried_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sources = make_sources(tmp_path, "b1", 12)
    locations = list(sources)
    always, twice = "photos/img 3.png", "photos/img 7.png"
    bucket = FakeBucket(tmp_path, flaky={always: None, twice: 2})
    install(monkeypatch, FakeStore({"b1": bucket}))
    got = fast(stat_threads=16).digest_many(locations)

    stuck = locations[3]
    assert isinstance(got[stuck], TransientError) and not isinstance(got[stuck], BadRowError)
    assert "503" in str(got[stuck]) and "img%203.png" in str(got[stuck])
    for loc in locations:
        if loc != stuck:
            assert got[loc] == hashlib.sha256(sources[loc]).hexdigest()
    # HEAD: the always-failing one 3 tries, the twice-failing one 3 (then it worked), the rest 1.
    assert bucket.heads == {**{f"b1/photos/img {i}.png": 1 for i in range(12)},
                            f"b1/{always}": 3, f"b1/{twice}": 3}
    # GET: the stuck one is still read (3 tries, its stat failed), the twice-failing one is
    # read 3 times too (its GETs fail twice as well), the others once each.
    assert bucket.gets == {**{f"b1/photos/img {i}.png": 1 for i in range(12)},
                           f"b1/{always}": 3, f"b1/{twice}": 3}


def test_a_missing_remote_source_is_a_bad_row_beside_good_ones(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sources = make_sources(tmp_path, "b1", 4)
    missing = "fake://b1/photos/gone.png"
    bucket = FakeBucket(tmp_path)
    install(monkeypatch, FakeStore({"b1": bucket}))
    got = fast().digest_many([*sources, missing])
    assert isinstance(got[missing], BadRowError) and "not found" in str(got[missing])
    assert bucket.heads["b1/photos/gone.png"] == 1  # a wrong path is not retried
    assert [got[loc] for loc in sources] == [hashlib.sha256(d).hexdigest()
                                             for d in sources.values()]


def test_cached_filesystems_give_the_paths_from_uri_gives() -> None:
    """Against pyarrow's own ``from_uri`` (S3 with a region: no network needed)."""
    if not hasattr(pafs, "S3FileSystem"):
        pytest.skip("this pyarrow has no S3 support")
    cache = RemoteFilesystems()
    uris = ["s3://bucket-a/photos/one.png?region=us-east-1",
            "s3://bucket-a/photos/two%20words%2Bplus.png?region=us-east-1",
            "s3://bucket-a/deep/er/three.jpg?region=us-east-1",
            "s3://bucket-b/photos/one.png?region=us-east-1"]
    resolved = [cache.resolve(uri) for uri in uris]
    assert [path for _, path in resolved] == [pafs.FileSystem.from_uri(u)[1] for u in uris]
    assert resolved[1][1] == "bucket-a/photos/two words+plus.png"
    a, b = {id(fs) for fs, _ in resolved[:3]}, id(resolved[3][0])
    assert len(a) == 1 and b not in a  # one filesystem for bucket-a, another for bucket-b
