"""Reports at scale: one bounded ledger pass gives the figures the full parse gave, and the review
page covers only rows this run generated or failed, under a cap it states."""

import hashlib
import html
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from synthetic_runs import make_large_run, make_synthetic_run

from pipeline.reports import build_report, generate_reports
from pipeline.reports.command import main
from pipeline.reports.images import safe_name
from pipeline.reports.ledger import LedgerError, load_ledger
from pipeline.reports.pricing import pricing_from_mapping
from pipeline.reports.report_doc import analyse_run, report_json_bytes
from pipeline.reports.sheets import STATUS_COLOURS

PRICES = {
    "currency": "USD", "source": "fixture", "as_of": "2026-11-27",
    "device_hour": {"H100": 2.99, "H200": 3.79, "A100": 1.79, "L40S": 0.99, "CPU": 0.05},
    "hosted_api": {"source": "fixture", "as_of": "2026-11-27",
                   "per_image": {"flux.1-kontext-pro": 0.04, "flux.1-kontext-dev": 0.025}},
}
PRICING = pricing_from_mapping(PRICES, origin="fixture")


def _line(**fields):
    return json.dumps({"v": 1, "run_id": "hand", "ts": 1.0, **fields}, separators=(",", ":"))


def _hand_ledger_text() -> str:
    """Every warning path of the analysis, compact cache hits (as the runner writes them), an actor
    restart, a budget stop, a row that hit the cache after a failed try, no rows_total."""
    phases = {"read": 0.1, "decode": 0.1, "text_encode": 0.2, "context_encode": 0.3, "denoise": 4.0,
              "decode_latents": 0.5, "file_encode": 0.1, "commit": 0.05}
    row = {"key": "k", "instruction": "i", "seed": 1, "image": "a.png"}
    lines = [
        _line(type="run-start", manifest="/m.parquet", model="m", fingerprint="f"),
        _line(type="actor-load", actor="a0", node="n", device="cuda:0", device_type="H100", start=10.0, end=30.0),
        _line(type="attempt", row_id="r0", row_index=0, **row, attempt=1, outcome="retry-scheduled",
              error_class="transient", error="oom", actor="a0", node="n", device="cuda:0", device_type="H100",
              start=30.0, end=35.0, phases=phases, output_uri=None),
        _line(type="attempt", row_id="r0", row_index=0, **row, attempt=2, outcome="cache-hit", start=36.0,
              output_uri="/o/r0.png"),
        _line(type="attempt", row_id="r1", row_index=1, **row, attempt=1, outcome="cache-hit", start=36.0,
              output_uri="/o/r1.png"),
        _line(type="attempt", row_id="r1", row_index=1, **row, attempt=2, outcome="ok", actor="a0",
              device_type="H100", start=37.0, end=42.0, phases=phases, output_uri="/o/r1b.png"),
        _line(type="attempt", row_id="r2", row_index=2, **row, attempt=1, outcome="mystery", actor="a0",
              device_type="H100", start=42.0, end=43.0, phases=phases),
        _line(type="actor-load", actor="a0", node="n", device="cuda:0", device_type="H100", start=50.0, end=60.0),
        _line(type="attempt", row_id="r3", row_index=3, **row, attempt=1, outcome="ok", actor="b9",
              device_type="A100", start=61.0, end=66.0, phases=phases, output_uri="/o/r3.png"),
        _line(type="actor-stop", actor="zz", end=70.0),
        _line(type="attempt", row_id="r4", row_index=4, **row, attempt=1, outcome="failed-permanent",
              error_class="bad-row", error="bad", actor=None, device_type=None, start=70.0, end=70.0,
              phases=None),
        _line(type="budget-stop", spent=1.5, cap=1.0, currency="USD", rows_not_dispatched=3),
        _line(type="actor-stop", actor="a0", end=80.0),
        _line(type="run-end", status="budget-stopped"),
    ]
    return "\n".join(lines) + "\n"


def _fixture(name: str, tmp: Path) -> Path:
    """A run folder whose ledger names no temporary path, so its report is the same bytes anywhere."""
    if name == "hand":
        run_dir = tmp / "out" / "runs" / "hand"
        run_dir.mkdir(parents=True)
        (run_dir / "ledger.jsonl").write_text(_hand_ledger_text())
        return run_dir
    options = {
        "mixed": dict(products=3, variants=4, failed=(1,), cache_hits=(2,), retried=(3,), unchanged=(5,),
                      spread=(6,), not_run=(11,)),
        "actor-dies": dict(products=2, variants=3, cache_hits=(1, 2, 3), retried=(0,), actor_dies=True),
        "all-hits": dict(products=1, variants=3, cache_hits=(0, 1, 2), actors=0),
        "torn-last-line": dict(products=2, variants=2, failed=(3,), cache_hits=(0,)),
    }[name]
    run = make_synthetic_run(tmp / "out", image_size=32, pricing=PRICES, **options)
    ledger = run.run_dir / "ledger.jsonl"
    text = ledger.read_text().replace(str(tmp / "out"), "/fixture/out")
    if name == "torn-last-line":
        text += '{"v":1,"type":"actor-st'
    ledger.write_text(text)
    return run.run_dir


FIXTURES = ("mixed", "actor-dies", "all-hits", "torn-last-line", "hand")


def report_digest(run_dir: Path) -> str:
    """sha256 of report.json's bytes, the ledger digest blanked after checking it is the file's and
    the run folder's (temporary) path in notes replaced."""
    report = build_report(run_dir, pricing=PRICING)
    ledger_sha = hashlib.sha256((run_dir / "ledger.jsonl").read_bytes()).hexdigest()
    assert report["inputs"]["ledger_sha256"] == ledger_sha
    report["inputs"]["ledger_sha256"] = "-"
    report["notes"] = [n.replace(str(run_dir), "RUN_DIR") for n in report["notes"]]
    return hashlib.sha256(report_json_bytes(report)).hexdigest()


# Digests of report.json written by the reports before the single streaming pass (commit 1254e56,
# which parsed the whole ledger into expanded dicts, twice): the figures, notes and their order.
# Renewed for report@4 (failed_model, marginal cache saving, summed wall time, retried, the
# lower-bound note, unknown outcomes failed), after checking that the figures and notes that
# changed from the @3 digests are those definitions' and no others. Renewed for report@5 after
# checking that only the schema, the cost model text and cost.by_product/by_variant changed;
# for report@6 after checking that only the schema and the null memory/text_phase blocks changed.
GOLDEN = {
    "mixed": "0080f9a1deb6c9313b07db111e7494e764d3de285daee5dbfd3c3ae1e51eb76d",
    "actor-dies": "5a89dc0fba4b50531cdb461dba61307a1cffa646f7c238683debe0c25c14c308",
    "all-hits": "9269146b7249ed0b96037e0e747c620b1521a17d23d26b0b942db5f1a44050e6",
    "torn-last-line": "0952b4b9fba839219793d16ce70c22a72b96ff3670cbbf99545132211a7f803d",
    "hand": "ac4846ba26328d9d99cca12340e6aa88b56df377a4885e27152a4d9f4d68d582",
}


@pytest.mark.parametrize("name", FIXTURES)
def test_report_json_is_byte_identical_to_the_full_parse(name, tmp_path):
    assert report_digest(_fixture(name, tmp_path)) == GOLDEN[name]


def test_figures_survive_any_read_size(monkeypatch, tmp_path):
    """Lines split across read chunks (down to 7 bytes) give the same report."""
    import pipeline.ledger as ledger_module  # the one reader reads in CHUNK_BYTES pieces

    monkeypatch.setattr(ledger_module, "CHUNK_BYTES", 7)
    for name in ("mixed", "torn-last-line", "hand"):
        assert report_digest(_fixture(name, tmp_path / name)) == GOLDEN[name], name


def test_generate_reports_writes_the_same_report_json_as_build_report(tmp_path):
    run_dir = _fixture("mixed", tmp_path)
    outputs = generate_reports(run_dir, pricing=PRICING, review=False, generated_at="2031-01-01T00:00:00Z")
    assert (run_dir / "report.json").read_bytes() == report_json_bytes(build_report(run_dir, pricing=PRICING))
    assert outputs.report["inputs"]["ledger_records"] == len((run_dir / "ledger.jsonl").read_text().splitlines())


def test_a_bad_line_is_a_torn_end_only_when_nothing_follows_it(tmp_path, monkeypatch):
    import pipeline.ledger as ledger_module  # the one reader reads in CHUNK_BYTES pieces

    monkeypatch.setattr(ledger_module, "CHUNK_BYTES", 5)
    good = _line(type="run-start", rows_total=1)
    (tmp_path / "ledger.jsonl").write_text(good + "\n" + '{"v":1,"ty' + "\n\n  \n")
    ledger = load_ledger(tmp_path)
    assert len(ledger.records) == 1 and "line 2 is incomplete (10 bytes" in ledger.warnings[0]
    (tmp_path / "ledger.jsonl").write_text(good + "\n" + '{"v":1,"ty' + "\n\n" + good + "\n")
    with pytest.raises(LedgerError, match="line 2 is not valid JSON"):
        load_ledger(tmp_path)


def test_cache_hits_are_counted_without_a_summary_each(tmp_path):
    run = make_large_run(tmp_path / "out", rows=200, generated_every=20, failed_every=50, image_size=16)
    analysis = analyse_run(run.run_dir, PRICING)
    assert len(analysis.hit_rows) == 200 - 10 - 4 == analysis.figures["rows"]["cache_hits"]
    assert len(analysis.rows) == 14 and {r.status for r in analysis.rows.values()} == {"done", "failed"}
    assert analysis.status_of("p0-v1") == "cache-hit" and analysis.status_of("p0-v0") == "done"


# -- the review page: rows to review only, under a cap -------------------------------------------

def review_data(page: Path) -> dict:
    body = re.search(r'<script type="application/json" id="review-data">(.*?)</script>',
                     page.read_text(encoding="utf-8"), re.S).group(1)
    return json.loads(body)


def page_text(page: Path) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page.read_text(encoding="utf-8")))


def files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """12 rows: 1 failed, 3 cache hits, 1 not run, 7 generated; the hits' outputs are deleted, so
    any attempt to open one would show up as a missing-output flag or note."""
    out = tmp_path_factory.mktemp("night") / "out"
    run = make_synthetic_run(out, products=3, variants=4, image_size=32, failed=(1,), cache_hits=(2, 6, 9),
                             not_run=(11,), unchanged=(5,))
    for row in run.rows:
        if row["status"] == "cache-hit":
            Path(row["output_uri"]).unlink()
    outputs = generate_reports(run.run_dir, progress=False)
    return run, outputs


def test_review_assets_exist_only_for_generated_and_failed_rows(night):
    run, outputs = night
    by_status = {s: [r["row_id"] for r in run.rows if r["status"] == s] for s in ("done", "failed", "cache-hit")}
    assert len(by_status["done"]) == 7 and len(by_status["cache-hit"]) == 3
    review = run.run_dir / "review"
    assert files(review / "thumbs") == {f"{safe_name(r)}.jpg" for r in by_status["done"]}
    assert files(review / "heat") == {f"{safe_name(r)}.png" for r in by_status["done"]}
    data = review_data(outputs.review_page)
    assert [r["row_id"] for r in data["rows"]] == ["p0-v0", "p0-v1", "p0-v3", "p1-v0", "p1-v1", "p1-v3",
                                                    "p2-v0", "p2-v2"]
    assert {r["row_id"]: r["flags"] for r in data["rows"]}["p1-v1"] == ["unchanged"]
    assert [r["flags"] for r in data["rows"] if r["row_id"] == "p0-v1"] == [["failed"]]
    assert not [r for r in data["rows"] if r["flags"] and r["row_id"] not in ("p0-v1", "p1-v1")]
    notes = page_text(outputs.review_page)
    assert "missing-output" not in notes and "output unavailable" not in notes  # no hit was opened
    sheets = [Image.open(p).convert("RGB") for p in outputs.sheets]
    hit_blue = np.array(STATUS_COLOURS["cache-hit"], np.uint8)
    assert sheets and not any((np.asarray(s) == hit_blue).all(axis=2).any() for s in sheets)


def test_the_page_states_the_hits_and_counts_that_add_up(night):
    run, outputs = night
    text = " ".join(page_text(outputs.review_page).split())
    assert "Shown: 8 rows to review after this run: 7 generated in this run and 1 failed." in text
    assert "Not shown: 3 cache hits. Their outputs were reviewed in the run that generated them" in text
    assert "results.parquet lists them (status cache-hit)" in text
    assert "Not shown: 1 row not run" in text
    assert "8 shown + 3 cache hits + 1 not run + 0 left out = 12 rows." in text
    assert "All (8)" in text and "Failed (1)" in text
    scope = review_data(outputs.review_page)["scope"]
    assert scope["by_status"] == {"done": 7, "failed": 1, "cache-hit": 3, "not-run": 1}
    assert scope["total"] == outputs.report["figures"]["rows"]["total"] == 12


def test_the_cap_shows_failed_rows_first_then_generated_rows_in_manifest_order(tmp_path):
    run = make_synthetic_run(tmp_path / "out", products=2, variants=5, image_size=32, failed=(3, 7),
                             cache_hits=(0,))
    outputs = generate_reports(run.run_dir, progress=False, max_review_rows=4)
    data = review_data(outputs.review_page)
    assert [r["row_id"] for r in data["rows"]] == ["p0-v1", "p0-v2", "p0-v3", "p1-v2"]
    assert files(run.run_dir / "review" / "thumbs") == {f"{safe_name(r)}.jpg" for r in ("p0-v1", "p0-v2")}
    assert data["scope"]["left_out"] == {"done": 5, "failed": 0}
    text = " ".join(page_text(outputs.review_page).split())
    assert "Left out: 5 rows to review (5 generated, 0 failed) above this page's limit of 4 rows" in text
    assert "results.parquet lists them" in text
    assert "kontext-batch report OUT/runs/run-synthetic --max-review-rows N (0: no limit)" in text
    assert "4 shown + 1 cache hit + 0 not run + 5 left out = 10 rows." in text
    assert sum(sheet_group_rows(outputs.review_page)) == 4

    outputs = generate_reports(run.run_dir, progress=False, max_review_rows=1)
    data = review_data(outputs.review_page)
    assert [r["row_id"] for r in data["rows"]] == ["p0-v3"]
    assert data["scope"]["left_out"] == {"done": 7, "failed": 1}
    assert files(run.run_dir / "review" / "thumbs") == set()  # rebuilt: the earlier thumbnails are gone

    outputs = generate_reports(run.run_dir, progress=False, max_review_rows=0)
    assert len(review_data(outputs.review_page)["rows"]) == 9
    assert "Left out: none; every row to review is shown (no limit)." in " ".join(page_text(outputs.review_page).split())


def sheet_group_rows(page: Path) -> list[int]:
    """Rows per contact sheet group, from the page's '<title> (N rows)' headings."""
    return [int(n) for n in re.findall(r"<h3>[^<]*\((\d+) rows\)</h3>", page.read_text(encoding="utf-8"))]


def test_the_report_command_takes_the_cap(tmp_path, capsys):
    run = make_synthetic_run(tmp_path / "out", products=1, variants=4, image_size=32)
    assert main([str(run.run_dir), "--max-review-rows", "3", "--print", "none", "--quiet"]) == 0
    assert review_data(run.run_dir / "review.html")["scope"]["shown"] == {"done": 3, "failed": 0}
    with pytest.raises(SystemExit) as exit_info:
        main([str(run.run_dir), "--max-review-rows", "-1"])
    assert exit_info.value.code == 2
    assert "'-1' is not a row count; pass a whole number >= 0 (0: no limit)" in capsys.readouterr().err


def test_without_results_parquet_the_counts_still_add_up(tmp_path):
    run = make_synthetic_run(tmp_path / "out", products=2, variants=3, image_size=32, cache_hits=(1,),
                             failed=(4,), not_run=(5,))
    (run.run_dir / "results.parquet").unlink()
    outputs = generate_reports(run.run_dir, progress=False)
    scope = review_data(outputs.review_page)["scope"]
    assert scope["by_status"] == {"done": 3, "failed": 1, "cache-hit": 1, "not-run": 1}
    assert scope["total"] == 6
    assert "results.parquet is missing" in page_text(outputs.review_page)
