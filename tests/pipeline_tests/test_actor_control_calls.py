"""An actor answers ``stop`` (and ``describe``) at once, even with every batch the driver keeps
in flight running: an interrupted run then records each actor's stop, and its held time is
billed. Before, two batches filled both of the actor's threads and ``stop`` waited behind them
past the driver's timeout. Integration: a local Ray cluster and the tiny-random model."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import ray
from PIL import Image
from pipeline_helpers import TEST_MODEL, start_ray

from pipeline.model_info import resolve_model_info
from pipeline.runner import RunConfig, _start_actors


def _batch(row_id: str) -> dict:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 120, 200)).save(buf, format="PNG")
    data = buf.getvalue()
    row = {"row_index": 0, "row_id": row_id, "key": "0" * 64, "instruction": "make it red",
           "seed": 1, "image_bytes": data, "image_sha256": hashlib.sha256(data).hexdigest(),
           "output_format": "png", "params": {}}
    return {"steps": 1, "guidance": 2.5, "size": None, "rows": [row]}


def test_stop_is_answered_while_the_batches_in_flight_still_run(tmp_path: Path) -> None:
    start_ray(num_cpus=2)
    try:
        # each batch holds the model for 30 s (the fault sleeps under the model lock)
        faults = [{"kind": "sleep", "row_id": rid, "seconds": 30.0, "times": 1,
                   "marker_dir": str(tmp_path / "faults")} for rid in ("a", "b")]
        config = RunConfig(manifest="unused", actors=1, in_flight_per_actor=2)
        slot, = _start_actors(config, resolve_model_info(TEST_MODEL), "cpu", "float32",
                              ["CPU"], None, faults)
        ray.get(slot.handle.describe.remote(), timeout=300)  # the model has loaded
        batches = [slot.handle.edit_batch.remote(_batch(rid)) for rid in ("a", "b")]
        stopped = slot.handle.stop.remote()
        ready, _ = ray.wait([stopped], timeout=25)
        assert ready == [stopped]
        assert ray.get(stopped)["actor"] == "editor-0"
        done, _ = ray.wait(batches, num_returns=2, timeout=0)
        assert done == []  # both batches were still running when stop answered
        ray.kill(slot.handle, no_restart=True)
    finally:
        ray.shutdown()
