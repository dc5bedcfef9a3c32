"""Bind a run's ledger to its outputs in the content-addressed store (report --verify).

For every `ok` and `cache-hit` attempt (each claims an output):

* its output_uri is the store path of its key (``.../objects/<key[:2]>/<key>.<ext>``), and every
  output of the run lies in one store;
* that object exists, and the sha256 and size of its bytes equal what its sidecar records (and
  the byte count the attempt recorded);
* the sidecar's key, instruction (normalised), seed and model fingerprint equal the attempt's
  (and the run-start's fingerprint); an `ok` the sidecar says this run wrote names the same row;
* with level "full", the key recomputed from the source image and the run's settings equals
  the recorded one (where those inputs are recorded and the source is readable; the others
  are counted, with the reason).

The store checked is `store` when given (a moved store), else the one the ledger's output_uri
names. Each problem names the ledger line, row and attempt, the field and both values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from pipeline.cache import normalise_instruction
from pipeline.store import Store

from .ledger import LedgerStream
from .rekey import NotRecomputable, Rekeyer

LEVELS = ("full", "stored", "none")  # full: bind + recompute keys; stored: bind only; none: skip
OUTPUT_OUTCOMES = ("ok", "cache-hit")
MAX_KEPT_PROBLEMS = 10_000  # a wholly rewritten ledger is counted past this, not kept


class StoreUnreachable(ValueError):
    """The store to check cannot be opened here (moved, another machine, no credentials)."""


@dataclass(frozen=True)
class Problem:
    where: str  # "ledger.jsonl line 7 (row p0-v1, attempt 1)"
    field: str  # "seed"
    found: str  # "ledger 1001"
    expected: str  # "store sidecar 1000"

    def __str__(self) -> str:
        return f"{self.where}: {self.field}: {self.found}, {self.expected}"


@dataclass
class OutputCheck:
    store: str | None = None  # the root checked
    store_given: bool = False  # from --store (else from the ledger's output_uri)
    level: str = "full"
    attempts: int = 0  # ok/cache-hit attempts checked
    objects: int = 0  # distinct store objects read and hashed
    rekeyed: int = 0  # attempts whose key was recomputed (and compared)
    not_rekeyed: dict[str, int] = field(default_factory=dict)  # reason -> attempts
    problems: list[Problem] = field(default_factory=list)
    problem_count: int = 0

    def add(self, problem: Problem) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_KEPT_PROBLEMS:
            self.problems.append(problem)


@dataclass(frozen=True)
class _Object:
    """What one store object holds, read once however many attempts name its key."""

    data_sha256: str | None  # None: the object is missing
    size: int
    sidecar: Mapping[str, Any] | None  # None: missing or unreadable
    error: str | None = None


def split_output_uri(uri: str) -> tuple[str, str, str] | None:
    """(store root, key, ext) of a store object URI, None when it is not one."""
    head, sep, name = uri.rpartition("/")
    root, sep2, shard = head.rpartition("/")
    root, sep3, objects = root.rpartition("/")
    key, dot, ext = name.partition(".")
    if not (sep and sep2 and sep3 and dot) or objects != "objects" or shard != key[:2] or "." in ext:
        return None
    return root, key, ext


def _show(value: Any) -> str:
    return repr(value) if not isinstance(value, str) or len(value) < 200 else repr(value[:200] + "…")


class _Binder:
    def __init__(self, run_dir: Path, store: str | None, level: str) -> None:
        self.run_dir = run_dir
        self.level = level
        self.check = OutputCheck(store=store, store_given=store is not None, level=level)
        self.recorded_root: str | None = None
        self.store: Store | None = None
        self.objects: dict[str, _Object] = {}
        self.rekeyer = Rekeyer()

    def where(self, rec: Mapping[str, Any]) -> str:
        return f"ledger.jsonl line {rec.get('_line')} (row {rec.get('row_id')}, attempt {rec.get('attempt')})"

    def problem(self, rec: Mapping[str, Any], name: str, found: Any, expected: str) -> None:
        self.check.add(Problem(self.where(rec), name, f"ledger {_show(found)}", expected))

    def open_store(self, root: str) -> Store:
        """The store to read (opened at the first output); StoreUnreachable when it is not here."""
        if self.store is None:
            chosen = self.check.store or root
            said = "given with --store" if self.check.store_given else "named by the ledger's output_uri"
            fix = ("pass the folder or URI it is at now" if self.check.store_given else
                   "if the run folder was copied or the store moved, pass --store ROOT (where the store "
                   "is now), or --outputs none to check the report against the ledger only")
            try:
                store = Store(chosen)
                info = store.fs.get_file_info(f"{store.base}/objects")
            except (OSError, ValueError) as exc:
                raise StoreUnreachable(f"store {chosen} ({said}) cannot be opened here ({exc}); {fix}") from None
            if info.type != pafs.FileType.Directory:
                raise StoreUnreachable(f"store {chosen} ({said}) has no objects/ folder here; {fix}")
            self.store, self.check.store = store, chosen
        return self.store

    def read_object(self, key: str, ext: str) -> _Object:
        cached = self.objects.get(key)
        if cached is not None:
            return cached
        assert self.store is not None
        try:
            with self.store.fs.open_input_stream(self.store.object_path(key, ext)) as handle:
                data = handle.read()
        except (FileNotFoundError, OSError):
            obj = _Object(None, 0, None)
        else:
            try:
                side = self.store.read_sidecar(key)
                obj = _Object(hashlib.sha256(data).hexdigest(), len(data), side if isinstance(side, dict) else None,
                              None if isinstance(side, dict) else "is not a JSON object")
            except (FileNotFoundError, OSError) as exc:
                obj = _Object(hashlib.sha256(data).hexdigest(), len(data), None, f"cannot be read ({exc})")
            except ValueError as exc:
                obj = _Object(hashlib.sha256(data).hexdigest(), len(data), None, f"is not JSON ({exc})")
            self.check.objects += 1
        self.objects[key] = obj
        return obj

    def attempt(self, rec: Mapping[str, Any], start: Mapping[str, Any]) -> None:
        self.check.attempts += 1
        key, uri = rec.get("key"), rec.get("output_uri")
        parts = split_output_uri(uri) if isinstance(uri, str) else None
        if parts is None or not isinstance(key, str) or len(key) < 2:
            self.problem(rec, "output_uri", uri, f"expected the store path of key {key} (…/objects/"
                         f"{str(key)[:2]}/{key}.<ext>)")
            return
        root, uri_key, ext = parts
        if uri_key != key:
            self.problem(rec, "output_uri", uri, f"names key {uri_key}, but the attempt's key is {key}")
        if self.recorded_root is None:
            self.recorded_root = root
        elif root != self.recorded_root:
            self.problem(rec, "output_uri", uri, f"expected an object in the run's store {self.recorded_root}, "
                         "where its other outputs are")
        store = self.open_store(root)
        obj = self.read_object(key, ext)
        if obj.data_sha256 is None:
            self.problem(rec, "key", key, f"no object of that key in store {self.check.store} "
                         f"(objects/{key[:2]}/{key}.{ext} is missing)")
            return
        if obj.sidecar is None:
            self.problem(rec, "sidecar", key, f"the sidecar {store.sidecar_path(key)} {obj.error}")
            return
        self.bytes_match(rec, key, ext, obj)
        self.provenance_match(rec, obj.sidecar, start)
        if self.level == "full":
            self.rekey(rec, start, obj.sidecar, ext)

    def bytes_match(self, rec: Mapping[str, Any], key: str, ext: str, obj: _Object) -> None:
        side = obj.sidecar or {}
        name = f"objects/{key[:2]}/{key}.{ext}"
        recorded = [(f, side[f]) for f in ("sha256", "image_sha256") if f in side]
        if not recorded:
            self.check.add(Problem(self.where(rec), "sha256", f"store object {name}",
                                   "its sidecar records no sha256 to check it against"))
        for name_in_sidecar, value in recorded:
            if value != obj.data_sha256:
                self.check.add(Problem(self.where(rec), "sha256", f"store sidecar {name_in_sidecar} {value}",
                                       f"bytes of {name} in the store hash to {obj.data_sha256} (damaged "
                                       "or replaced)"))
        if "bytes" in side and side["bytes"] != obj.size:
            self.check.add(Problem(self.where(rec), "bytes", f"store sidecar {side['bytes']}",
                                   f"{name} holds {obj.size} bytes"))
        if rec.get("bytes") is not None and rec.get("bytes") != obj.size:
            self.problem(rec, "bytes", rec.get("bytes"), f"{name} in the store holds {obj.size} bytes")

    def provenance_match(self, rec: Mapping[str, Any], side: Mapping[str, Any],
                         start: Mapping[str, Any]) -> None:
        params = side.get("params") if isinstance(side.get("params"), Mapping) else {}
        sidecar_key = side.get("key", params.get("key"))
        if sidecar_key is not None and sidecar_key != rec.get("key"):
            self.problem(rec, "key", rec.get("key"), f"store sidecar {sidecar_key}")
        instruction = rec.get("instruction")
        if "instruction" in params and (not isinstance(instruction, str) or normalise_instruction(
                instruction) != normalise_instruction(str(params["instruction"]))):
            self.problem(rec, "instruction", instruction, f"store sidecar {_show(params['instruction'])}")
        if "seed" in params and rec.get("seed") != params["seed"]:
            self.problem(rec, "seed", rec.get("seed"), f"store sidecar {params['seed']!r}")
        fingerprint = params.get("fingerprint")
        if fingerprint is not None and start.get("fingerprint") not in (None, fingerprint):
            self.check.add(Problem(self.where(rec), "fingerprint", f"run-start {start.get('fingerprint')}",
                                   f"store sidecar {fingerprint}"))
        written_here = params.get("run_id") == rec.get("run_id") and not rec.get("already_stored")
        if rec.get("outcome") == "ok" and written_here and params.get("row_id") != rec.get("row_id"):
            self.problem(rec, "row_id", rec.get("row_id"), f"store sidecar {params.get('row_id')!r} (this run "
                         "wrote the object for that row)")

    def rekey(self, rec: Mapping[str, Any], start: Mapping[str, Any], side: Mapping[str, Any],
              ext: str) -> None:
        params = side.get("params") if isinstance(side.get("params"), Mapping) else {}
        try:
            key, location = self.rekeyer.key_for(rec, start, params, ext)
        except NotRecomputable as exc:
            reason = str(exc)
            self.check.not_rekeyed[reason] = self.check.not_rekeyed.get(reason, 0) + 1
            return
        self.check.rekeyed += 1
        if key != rec.get("key"):
            self.problem(rec, "key", rec.get("key"), f"recomputed {key} from source {location}, the "
                         "attempt's instruction and seed and the run's settings")


def check_outputs(run_dir: str | Path, *, store: str | None = None, level: str = "full") -> OutputCheck:
    """Bind every ok/cache-hit attempt of RUN_DIR's ledger to its store object (module doc).
    StoreUnreachable when the store cannot be opened; LedgerError for a damaged ledger."""
    if level not in LEVELS:
        raise ValueError(f"outputs check level {level!r} is not one of {', '.join(LEVELS)}")
    binder = _Binder(Path(run_dir), store, level)
    if level == "none":
        return binder.check
    start: Mapping[str, Any] = {}
    for rec in LedgerStream.open(run_dir):
        if rec["type"] == "run-start":
            start = rec  # a resumed run's later invocations restate the same key settings
        elif rec["type"] == "attempt" and rec.get("outcome") in OUTPUT_OUTCOMES:
            binder.attempt(rec, start)
    return binder.check
