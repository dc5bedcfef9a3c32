"""One definition of model seconds (pipeline.ledger_schema): the device-busy phases. The
results table's ``seconds`` (dispatch commit, resume, a recovered commit), the report's busy
time and the row's cost all use it: file_encode (CPU thread) is out, failed_model is in."""

from __future__ import annotations

import time
from pathlib import Path

from pipeline.dispatch_commit import Recorder, Try
from pipeline.dispatch_protocol import RowResult
from pipeline.ledger import LedgerWriter, read_ledger
from pipeline.ledger_schema import MODEL_PHASES, model_seconds
from pipeline.outcomes import Outcomes
from pipeline.progress import RunProgress
from pipeline.records import Task
from pipeline.reports import usage
from pipeline.resume import read_history
from pipeline.store import Store

# An ok row that first shared a batch whose model call raised (failed_model), then ran alone.
PHASES = {"read": 0.25, "decode": 0.5, "text_encode": 1.0, "context_encode": 2.0, "denoise": 4.0,
          "decode_latents": 8.0, "failed_model": 16.0, "file_encode": 32.0, "commit": 64.0}
BUSY = 1.0 + 2.0 + 4.0 + 8.0 + 16.0


def test_model_seconds_are_the_device_busy_phases() -> None:
    assert model_seconds(PHASES) == BUSY
    assert usage.MODEL_PHASES is MODEL_PHASES  # the report's busy time is the same sum
    assert model_seconds(None) == model_seconds({"denoise": None, "text_encode": True}) == 0.0


def _task() -> Task:
    return Task(row_index=0, row_id="r0", image="a.png", image_sha256="0" * 64,
                instruction="edit", seed=1, steps=4, guidance=2.5, size=None,
                output_format="png", ext="png", key="ab" * 32)


def test_results_seconds_of_a_committed_row_are_its_model_seconds(tmp_path: Path) -> None:
    outcomes = Outcomes(1)
    with LedgerWriter(tmp_path / "ledger.jsonl", "r") as ledger:
        recorder = Recorder(
            store=Store(str(tmp_path / "store")), ledger=ledger, outcomes=outcomes,
            progress=RunProgress(1, disable=True), followers={}, prior={}, spent={},
            max_attempts=3, params_for=lambda task: {},
            sidecar_for=lambda task, params, data, origin: {}, retry=lambda task, isolate: None)
        now = time.time()
        phases = {k: v for k, v in PHASES.items() if k != "commit"}  # commit is timed here
        res = RowResult(row_index=0, key=_task().key, ok=True, start=now, end=now,
                        phases=phases, data=b"png")
        ledger.append(recorder.commit(Try(_task(), {"actor": "editor-0"}, now, now, phases), res))
    assert outcomes.status[0] == "done" and outcomes.seconds[0] == BUSY  # was BUSY - 16 + 32
    # ... and resume reads the same figure back from the ledger
    assert read_history(tmp_path / "ledger.jsonl").rows[0].seconds == BUSY
    (ok,) = [r for r in read_ledger(tmp_path / "ledger.jsonl") if r["type"] == "attempt"]
    assert usage.model_seconds(ok["phases"]) == BUSY
