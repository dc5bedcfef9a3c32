"""Shared pieces of the hardening suite: a Ray cluster drivers can join, the CLI as a
subprocess, and the invariants every run must keep whatever happened to it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from pipeline_helpers import REPO, TEST_MODEL, read_records, short_tmp, wait_for

FINAL_STATUSES = ("done", "cache-hit", "failed")


class SharedCluster:
    """A one-node Ray cluster in its own processes: CLI drivers join it with --address and
    this test process joins it too, so no run pays for starting Ray."""

    def __init__(self, num_cpus: int = 2) -> None:
        import ray
        from ray.cluster_utils import Cluster

        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        self.cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": num_cpus, "include_dashboard": False,
            "object_store_memory": 150 * 1024 ** 2, "temp_dir": short_tmp("kbhr")})
        self.address = self.cluster.address
        ray.init(address=self.address, include_dashboard=False, log_to_driver=False)

    def shutdown(self) -> None:
        import ray

        ray.shutdown()
        self.cluster.shutdown()


def cli_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    for name in ("KONTEXT_BATCH_FAULTS", "KONTEXT_TEST_KILL_AT", "RAY_ADDRESS"):
        env.pop(name, None)
    env.update(extra)
    return env


def cli_argv(manifest: Path, out: Path, address: str, *more: str) -> list[str]:
    """``kontext-batch`` arguments of a small CPU run joining the cluster at ``address``."""
    return ["run", str(manifest), "--out", str(out), "--model", TEST_MODEL, "--device", "cpu",
            "--batch-size", "2", "--actors", "1", "--address", address, "--quiet", *more]


def cli_args(manifest: Path, out: Path, address: str, *more: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", *cli_argv(manifest, out, address, *more)]


def run_cli(manifest: Path, out: Path, address: str, *more: str, env: dict | None = None,
            timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(cli_args(manifest, out, address, *more), cwd=REPO,
                          env=env or cli_env(), capture_output=True, text=True,
                          timeout=timeout)


def start_cli(manifest: Path, out: Path, address: str, *more: str,
              env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(cli_args(manifest, out, address, *more), cwd=REPO,
                            env=env or cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


# -- invariants -----------------------------------------------------------------------------
def run_dirs(out: Path) -> list[Path]:
    runs = out / "runs"
    return sorted(p for p in runs.iterdir() if p.is_dir()) if runs.exists() else []


def results_rows(run_dir: Path) -> list[dict[str, Any]]:
    return pq.read_table(run_dir / "results.parquet").to_pylist()


def attempts(run_dir: Path) -> list[dict[str, Any]]:
    return [r for r in read_records(run_dir) if r["type"] == "attempt"]


def store_objects(out: Path) -> Iterator[tuple[Path, Path]]:
    """(output, sidecar) pairs under OUT/store/objects."""
    for sidecar in (out / "store" / "objects").glob("*/*.json"):
        outputs = [p for p in sidecar.parent.glob(f"{sidecar.stem}.*") if p != sidecar
                   and ".tmp-" not in p.name]
        for output in outputs:
            yield output, sidecar


def check_store(out: Path) -> list[str]:
    """Problems in the store: objects that do not match their sidecar, objects without a
    sidecar, names that are not <sha256>.<ext>. Temp files are allowed (a kill mid-write
    leaves them; they are never read)."""
    problems = []
    objects = out / "store" / "objects"
    if not objects.exists():
        return problems
    for path in objects.glob("*/*"):
        if ".tmp-" in path.name:
            continue
        stem, _, ext = path.name.partition(".")
        if len(stem) != 64 or any(c not in "0123456789abcdef" for c in stem) or \
                ext not in ("png", "jpg", "webp", "json", "safetensors") or path.parent.name != stem[:2]:
            problems.append(f"unexpected store entry {path}")
            continue
        if ext == "json":
            continue
        sidecar = path.with_name(f"{stem}.json")
        if not sidecar.exists():
            problems.append(f"{path.name} has no sidecar")
            continue
        doc = json.loads(sidecar.read_text())
        data = path.read_bytes()
        if doc.get("sha256") != hashlib.sha256(data).hexdigest() or doc.get("bytes") != len(data):
            problems.append(f"{path.name} does not match its sidecar")
    return problems


def check_run(run_dir: Path, rows_total: int) -> list[str]:
    """The run's promises: one results row per manifest row, each done / cache-hit / failed
    with a reason; one ok (or cache-hit) attempt per finished key in the ledger; every
    finished row's output exists and matches its sidecar."""
    problems = []
    rows = results_rows(run_dir)
    if [r["row_index"] for r in rows] != list(range(rows_total)):
        problems.append(f"results has rows {[r['row_index'] for r in rows]}, want 0..{rows_total - 1}")
    for r in rows:
        if r["status"] not in FINAL_STATUSES:
            problems.append(f"row {r['row_index']} ended {r['status']!r}")
        if r["status"] == "failed" and not (r["reason"] or "").strip():
            problems.append(f"row {r['row_index']} failed without a reason")
        if r["status"] in ("done", "cache-hit"):
            uri = r["output_uri"]
            if not uri or not Path(uri).is_file():
                problems.append(f"row {r['row_index']} has no output file ({uri})")
    oks = Counter(a["key"] for a in attempts(run_dir) if a["outcome"] == "ok")
    if any(n != 1 for n in oks.values()):
        problems.append(f"keys with several ok records: {[k for k, n in oks.items() if n != 1]}")
    done_keys = {r["key"] for r in rows if r["status"] == "done"}
    if done_keys - set(oks):
        problems.append(f"done rows without an ok record: {sorted(done_keys - set(oks))}")
    from pipeline.reports.ledger import load_ledger as strict_read

    try:
        strict_read(run_dir)
    except Exception as exc:  # the audited reader refuses a malformed ledger
        problems.append(f"the reports' strict ledger reader refuses the ledger: {exc}")
    return problems


# -- a node is lost --------------------------------------------------------------------------
def remove_node_after_it_commits(cluster: Any, worker: Any, out: Path, driver: Any,
                                 outcome: dict[str, Any], timeout: float = 180) -> None:
    """Wait until an actor on ``worker`` (a node of the ray.cluster_utils ``cluster``) has
    committed a row of the run under ``out``, then remove that node while the run goes on.
    ``driver``/``outcome`` come from run_in_background: a run that ends first fails here."""

    def worker_committed() -> bool:
        dirs = run_dirs(out)
        if not dirs or not (dirs[0] / "ledger.jsonl").exists():
            return False
        recs = read_records(dirs[0])
        on_worker = {r["actor"] for r in recs
                     if r["type"] == "actor-load" and r["node"] == worker.node_id}
        return any(r["type"] == "attempt" and r["outcome"] == "ok" and r["actor"] in on_worker
                   for r in recs)

    wait_for(lambda: worker_committed() or not driver.is_alive(), timeout,
             "an actor on the worker node to commit a row")
    assert driver.is_alive(), outcome
    cluster.remove_node(worker)


# -- drivers that can be SIGKILLed cheaply ----------------------------------------------------
def _driver_main(argv: list[str], env: dict[str, str], log: str) -> None:
    """A forked CLI driver: fresh environment, output to ``log``, exit with the CLI's code."""
    os.environ.clear()
    os.environ.update(env)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    from pipeline import cli

    code = cli.main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class ForkedDrivers:
    """Runs ``kontext-batch run`` in processes forked from a server that has already imported
    the pipeline, kontext_core and Ray (a forkserver), so a driver that is killed a few
    milliseconds into its run costs no interpreter start-up. Each driver is a separate
    process that joins Ray itself, exactly like the CLI."""

    def __init__(self) -> None:
        import multiprocessing

        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(["pipeline.cli", "pipeline.runner", "pipeline.actors",
                                          "kontext_core", "ray", "pyarrow.parquet"])

    def start(self, argv: list[str], env: dict[str, str], log: Path) -> Any:
        """A running driver (a multiprocessing.Process); ``wait`` collects it."""
        proc = self._ctx.Process(target=_driver_main, args=(argv, env, str(log)))
        proc.start()
        return proc

    def run(self, argv: list[str], env: dict[str, str], log: Path,
            timeout: float = 240) -> int:
        """The driver's exit code (-9 when it SIGKILLed itself)."""
        return self.wait(self.start(argv, env, log), log, timeout)

    @staticmethod
    def wait(proc: Any, log: Path, timeout: float = 240) -> int:
        proc.join(timeout)
        if proc.is_alive():
            proc.kill()
            proc.join()
            raise AssertionError(f"driver still running after {timeout:.0f} s; log: "
                                 f"{log.read_text()[-3000:]}")
        return int(proc.exitcode)

