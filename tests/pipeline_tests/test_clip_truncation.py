"""CLIP truncation is recorded, apart from T5's: the editor reports it per row, the actor's row
result carries it and a row note (ledger attempt and results ``notes``), and the review page shows
which encoder cut the instruction (results ``truncated`` is T5, the note is CLIP)."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from kontext_ckpt_helpers import SIZE, tiny_editor
from PIL import Image
from synthetic_runs import make_synthetic_run

from pipeline.actors import EditorActor
from pipeline.records import CLIP_TRUNCATED_NOTE
from pipeline.reports import generate_reports

# The test model's limits: CLIP 16 tokens of characters, T5 16 tokens of whole words.
SHORT = "make red"  # 7 characters + start/end: fits both
CLIP_ONLY = "make the background red"  # 20 characters: past CLIP's 16, 5 T5 tokens
BOTH = " ".join(["red"] * 20)  # 21 T5 tokens, 60 characters


@pytest.fixture(scope="module")
def editor():
    return tiny_editor()


def test_editor_reports_clip_and_t5_truncation_per_row(editor):
    image = Image.new("RGB", SIZE, (30, 120, 200))
    out = editor.edit([image] * 4, [SHORT, CLIP_ONLY, BOTH, CLIP_ONLY], [0, 1, 2, 3], steps=1)
    assert out.clip_truncated == [False, True, True, True]
    assert out.truncated == [False, False, True, False]


def test_clip_limit_is_the_tokenizers_including_start_and_end(editor):
    limit = editor.text.clip_tokenizer.model_max_length
    assert limit == 16
    fits = "a" * (limit - 2)  # one token per character, plus start and end
    emb = editor.text.encode([fits, fits + "b"])
    assert emb.clip_truncated == [False, True]
    assert emb.truncated == [False, False]


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", SIZE, (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


def _batch(instructions: list[str]) -> dict[str, Any]:
    data = _png()
    rows = [{"row_index": i, "row_id": f"r{i}", "key": f"{i:064x}", "instruction": text, "seed": i,
             "image_bytes": data, "image_sha256": hashlib.sha256(data).hexdigest(),
             "output_format": "png", "params": {}} for i, text in enumerate(instructions)]
    return {"steps": 1, "guidance": 2.5, "size": None, "rows": rows}


def test_actor_result_carries_the_flag_and_the_row_note(editor):
    actor = EditorActor("editor-0", "test", "cpu", "float32", editor_factory=lambda *a, **k: editor)
    rows = actor.edit_batch(_batch([SHORT, CLIP_ONLY, BOTH]))["rows"]
    assert [r["ok"] for r in rows] == [True, True, True]
    assert [r["clip_truncated"] for r in rows] == [False, True, True]
    assert [r["truncated"] for r in rows] == [False, False, True]
    # the row notes the dispatcher writes to the attempt record and the results table's notes
    assert [r["notes"] for r in rows] == [[], [CLIP_TRUNCATED_NOTE], [CLIP_TRUNCATED_NOTE]]


def _mark_results(run_dir: Path, t5: set[int], clip: set[int]) -> None:
    path = run_dir / "results.parquet"
    table = pq.read_table(path).to_pylist()
    for i, rec in enumerate(table):
        rec["truncated"] = i in t5
        rec["notes"] = CLIP_TRUNCATED_NOTE if i in clip else None
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(table), path)


def test_review_page_shows_which_encoder_cut_the_instruction(tmp_path):
    run = make_synthetic_run(tmp_path / "out", products=2, variants=3)
    _mark_results(run.run_dir, t5={1}, clip={1, 2})
    outputs = generate_reports(run.run_dir, progress=False)
    html = Path(outputs.review_page).read_text(encoding="utf-8")
    data = json.loads(html.split('type="application/json"')[1].split(">", 1)[1].split("</script>")[0])
    cuts = {row["row_id"]: row["text_cuts"] for row in data["rows"]}
    ids = [rec["row_id"] for rec in pq.read_table(run.run_dir / "results.parquet").to_pylist()]
    assert cuts[ids[1]] == ["T5", "CLIP"] and cuts[ids[2]] == ["CLIP"]
    assert all(not cuts[r] for r in ids if r not in (ids[1], ids[2]))
    assert html.count('<li class="flag text-cut"') == 3
    assert "1 instruction cut at T5&#x27;s limit" in html or "1 instruction cut at T5's limit" in html
    assert "2 instructions cut at CLIP" in html
    assert all(not row["flagged"] for row in data["rows"] if row["row_id"] in (ids[1], ids[2]))
