"""A model call that raises still held the device: its rows' failed attempts carry that time
(phase ``failed_model``), so the cost report prices failed attempts. Runs the actor class
in-process (no Ray) with a scripted editor."""

from __future__ import annotations

import hashlib
import io
import time
from typing import Any

from PIL import Image

from pipeline.actors import EditorActor


class EditError(Exception):
    """Named as kontext_core's request error: the dispatcher classes it a bad row."""


class SlowFailingEditor:
    """Holds the 'device' for ``seconds`` per call, then raises ``error`` for some rows."""

    def __init__(self, seconds: float, error: type[Exception], bad_seeds: set[int]) -> None:
        self.seconds, self.error, self.bad_seeds = seconds, error, bad_seeds
        self.calls: list[list[int]] = []

    def edit(self, *, images: list[Any], instructions: list[str], seeds: list[int],
             **_: Any) -> Any:
        self.calls.append(list(seeds))
        time.sleep(self.seconds)
        if self.bad_seeds & set(seeds):
            raise self.error("scripted failure")
        raise AssertionError("the scripted editor only fails")


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


def _batch(seeds: list[int]) -> dict[str, Any]:
    data = _png()
    rows = [{"row_index": i, "row_id": f"r{i}", "key": f"{i:064x}", "instruction": "edit",
             "seed": seed, "image_bytes": data, "image_sha256": hashlib.sha256(data).hexdigest(),
             "output_format": "png", "params": {}} for i, seed in enumerate(seeds)]
    return {"steps": 2, "guidance": 2.5, "size": None, "rows": rows}


def _actor(editor: SlowFailingEditor) -> EditorActor:
    return EditorActor("editor-0", "scripted", "cpu", "float32",
                       editor_factory=lambda *args, **kwargs: editor)


def test_a_failed_model_call_is_charged_to_its_rows() -> None:
    import ray

    editor = SlowFailingEditor(0.2, OSError, bad_seeds={0, 1})
    result = _actor(editor).edit_batch(_batch([0, 1]))
    assert not ray.is_initialized()  # in-process use starts no Ray
    rows = result["rows"]
    assert [r["ok"] for r in rows] == [False, False]
    assert {r["error_class"] for r in rows} == {"transient"}
    shares = [r["phases"]["failed_model"] for r in rows]
    assert all(0.1 <= s for s in shares)  # 0.2 s held, split over two rows
    assert sum(shares) >= 0.2


def test_a_bad_row_retried_alone_carries_the_batch_call_too() -> None:
    editor = SlowFailingEditor(0.1, EditError, bad_seeds={1})
    result = _actor(editor).edit_batch(_batch([0, 1]))
    assert editor.calls == [[0, 1], [0], [1]]  # the batch, then each row alone
    bad = result["rows"][1]
    assert bad["error_class"] == "bad-row"
    # its own call (0.1 s) plus its share of the batch call (0.05 s)
    assert bad["phases"]["failed_model"] >= 0.15
