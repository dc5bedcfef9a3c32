"""Shared helpers for the pipeline tests: small manifests, images, Ray, ledger reading."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
TEST_MODEL = "tiny-random"


def write_images(folder: Path, count: int, size: int = 32) -> list[str]:
    """``count`` distinct small PNGs (a colour ramp); returns their file names."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        img = Image.new("RGB", (size, size), ((i * 37) % 256, (i * 91) % 256, 120))
        for x in range(size // 2):
            img.putpixel((x, x), (255, 255, 255))
        name = f"product_{i}.png"
        img.save(folder / name)
        names.append(name)
    return names


def make_manifest(folder: Path, products: int = 10, variants: int = 4, **columns: Any) -> Path:
    """products x variants rows over ``products`` images in folder/images; extra columns
    (lists of the right length) are added as given."""
    names = write_images(folder / "images", products)
    rows = []
    for p, name in enumerate(names):
        for v in range(variants):
            rows.append({"image": f"images/{name}",
                         "instruction": f"put the product on background number {v}",
                         "seed": 1000 + v, "row_id": f"p{p}-v{v}", "product_id": f"p{p}",
                         "variant": f"v{v}", "meta_sku": f"SKU-{p:03d}"})
    frame = pd.DataFrame(rows)
    for name, values in columns.items():
        frame[name] = values
    path = folder / "manifest.parquet"
    frame.to_parquet(path, index=False)
    return path


def rewrite_manifest(path: Path, **changes: dict[int, Any]) -> Path:
    """Change single cells: column -> {row: value}; writes back in place."""
    frame = pd.read_parquet(path)
    for column, cells in changes.items():
        for row, value in cells.items():
            frame.loc[row, column] = value
    frame.to_parquet(path, index=False)
    return path


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    out = []
    for line in (run_dir / "ledger.jsonl").read_bytes().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def ok_counts(run_dir: Path) -> Counter:
    return Counter(r["key"] for r in read_records(run_dir)
                   if r["type"] == "attempt" and r["outcome"] == "ok")


_TEMP_DIRS: list[str] = []


def short_tmp(prefix: str) -> str:
    """Ray's socket paths must stay short: a temp dir directly under /tmp (removed at exit)."""
    path = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    _TEMP_DIRS.append(path)
    return path


@atexit.register
def _remove_temp_dirs() -> None:
    for path in _TEMP_DIRS:
        shutil.rmtree(path, ignore_errors=True)


def start_ray(num_cpus: int = 2) -> None:
    import ray
    from ray import cloudpickle

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Test doubles below are shipped to actors by value (workers cannot import tests/).
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=num_cpus, include_dashboard=False, _temp_dir=short_tmp("kbray"),
             object_store_memory=200 * 1024 * 1024, log_to_driver=False)


class CountingFactory:
    """Editor factory that leaves a marker file per model load (loads happen in actors)."""

    def __init__(self, marker_dir: Path) -> None:
        self.marker_dir = str(marker_dir)

    def __call__(self, model: str, device: str, dtype: Any) -> Any:
        from kontext_core import KontextEditor

        Path(self.marker_dir).mkdir(parents=True, exist_ok=True)
        (Path(self.marker_dir) / f"load-{os.getpid()}-{time.time_ns()}").touch()
        return KontextEditor.load(model, device=device, dtype=dtype)


def loads(marker_dir: Path) -> int:
    return len(list(marker_dir.glob("load-*"))) if marker_dir.exists() else 0


def wait_for(predicate, timeout: float, what: str) -> None:
    """Poll ``predicate`` until true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def run_in_background(config: Any, faults: list[dict]) -> tuple[Any, dict[str, Any]]:
    """Start ``run_batch(config, faults=faults)`` on a thread (so a test can break the cluster
    under it); returns the thread and a dict that receives "summary" or "error"."""
    import threading

    from pipeline.runner import run_batch

    outcome: dict[str, Any] = {}

    def drive() -> None:
        try:
            outcome["summary"] = run_batch(config, faults=faults)
        except BaseException as exc:  # surfaced by the caller's assertions
            outcome["error"] = exc

    driver = threading.Thread(target=drive)
    driver.start()
    return driver, outcome


RAY_AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def cli_run_process(manifest: Path, out: Path, faults: list[dict] | None = None,
                    tmp_prefix: str = "kbcli") -> subprocess.Popen:
    """`kontext-batch run` on the tiny test model in a child process (its own session, so a
    test can signal it and its Ray alone), with the given fault plan and nothing inherited
    that would change the run."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_TMPDIR": short_tmp(tmp_prefix),
           "OMP_NUM_THREADS": "1"}
    # RAY_AUTH_* too: the CLI gives its local Ray a token of its own, as it does for users
    for name in ("KONTEXT_BATCH_FAULTS", "KONTEXT_TEST_KILL_AT", "RAY_ADDRESS", *RAY_AUTH_ENV):
        env.pop(name, None)
    if faults:
        env["KONTEXT_BATCH_FAULTS"] = json.dumps(faults)
    cmd = [sys.executable, "-m", "pipeline.cli", "run", str(manifest), "--out", str(out),
           "--model", TEST_MODEL, "--device", "cpu", "--batch-size", "2", "--actors", "1",
           "--no-report", "--quiet"]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)


def ok_lines(out: Path) -> int:
    """Rows committed so far by the (only) run under ``out``, from its ledger."""
    ledgers = list((out / "runs").glob("*/ledger.jsonl"))
    if not ledgers:
        return 0
    return sum(1 for line in ledgers[0].read_bytes().splitlines() if b'"outcome":"ok"' in line)


def sigterm_self_mid_call(events: list[str], second_sigterm: bool = False) -> None:
    """Send this process SIGTERM and wait for the handler to interrupt; record what ran.
    ``second_sigterm``: another SIGTERM arrives during the cleanup (an impatient supervisor)."""
    import signal

    try:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler raises within a bytecode or two
            time.sleep(0.01)
        events.append("not interrupted")
    finally:
        if second_sigterm:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
        events.append("cleanup finished")


def run_once(manifest: Path, out: Path, **config: Any) -> Any:
    """One run_batch of the tiny test model on CPU in its own local Ray (started and shut
    down here); ``config`` overrides RunConfig fields, ``editor_factory`` goes to run_batch."""
    import ray

    from pipeline.runner import RunConfig, run_batch

    factory = config.pop("editor_factory", None)
    settings = dict(manifest=str(manifest), out=str(out), model=TEST_MODEL, device="cpu", batch_size=2,
                    actors=1, reports=False, progress=False, retry_backoff_s=0.05)
    start_ray(num_cpus=2)
    try:
        return run_batch(RunConfig(**{**settings, **config}),
                         **({"editor_factory": factory} if factory else {}))
    finally:
        ray.shutdown()


def ray_cluster_fixture(autouse: bool = False, num_cpus: int = 2) -> Any:
    """A module-scoped pytest fixture named ``ray_cluster``: one local Ray (start_ray) for the
    module's tests, shut down after them. Use it as ``ray_cluster = ray_cluster_fixture()``."""
    import pytest

    @pytest.fixture(scope="module", autouse=autouse, name="ray_cluster")
    def _ray_cluster() -> Any:
        import ray

        start_ray(num_cpus=num_cpus)
        yield
        ray.shutdown()

    return _ray_cluster


def run_config(manifest: Path, out: Path, **overrides: Any) -> Any:
    """A RunConfig for the tiny test model on CPU (batches of 4, one actor, no reports, no
    progress bar, quick retries); ``overrides`` replace or add RunConfig fields."""
    from pipeline.runner import RunConfig

    settings = dict(manifest=str(manifest), out=str(out), model=TEST_MODEL, device="cpu", batch_size=4,
                    actors=1, reports=False, progress=False, retry_backoff_s=0.05)
    return RunConfig(**{**settings, **overrides})
