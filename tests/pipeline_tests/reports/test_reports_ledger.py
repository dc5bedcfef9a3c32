"""Ledger reading: a killed driver's partial last line is tolerated, damage elsewhere is not."""

import json

import pytest

from pipeline.reports.ledger import LedgerError, load_ledger


def _line(**fields):
    return json.dumps({"v": 1, "run_id": "r", "ts": 1.0, **fields})


def test_truncated_last_line_is_skipped_with_a_warning(tmp_path):
    text = _line(type="run-start", rows_total=1) + "\n" + _line(type="run-end", status="complete")[:20]
    (tmp_path / "ledger.jsonl").write_text(text)
    ledger = load_ledger(tmp_path)
    assert [r["type"] for r in ledger.records] == ["run-start"]
    assert len(ledger.warnings) == 1 and "line 2 is incomplete" in ledger.warnings[0]


def test_bad_line_in_the_middle_is_an_error_naming_the_line(tmp_path):
    text = "\n".join([_line(type="run-start"), "{not json", _line(type="run-end", status="complete")]) + "\n"
    (tmp_path / "ledger.jsonl").write_text(text)
    with pytest.raises(LedgerError, match="line 2 is not valid JSON"):
        load_ledger(tmp_path)


def test_unknown_schema_version_and_type_are_errors(tmp_path):
    (tmp_path / "ledger.jsonl").write_text(json.dumps({"v": 2, "type": "run-start"}) + "\n")
    with pytest.raises(LedgerError, match="version 2 is not supported"):
        load_ledger(tmp_path)
    (tmp_path / "ledger.jsonl").write_text(_line(type="mystery") + "\n")
    with pytest.raises(LedgerError, match="unknown record type 'mystery'"):
        load_ledger(tmp_path)


def test_missing_ledger_names_the_path(tmp_path):
    with pytest.raises(LedgerError, match="ledger.jsonl does not exist"):
        load_ledger(tmp_path)
