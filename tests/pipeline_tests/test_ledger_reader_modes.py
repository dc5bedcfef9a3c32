"""One ledger reader (pipeline.ledger.read_ledger), two modes: strict for reports and verify
(damage is an error naming the line), lenient for resume (a line that is not a record is
skipped). The schema's record types are defined once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ledger_records import record

import pipeline.ledger
import pipeline.reports.ledger
from pipeline.ledger import LedgerError, read_ledger
from pipeline.ledger_schema import RECORD_TYPES


def _write(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _rec(type: str, **fields) -> str:
    return json.dumps(record(type, 1.0, run_id="r", **fields))


def test_a_damaged_middle_line_is_skipped_when_lenient_and_named_when_strict(tmp_path: Path) -> None:
    path = _write(tmp_path / "ledger.jsonl", _rec(type="run-start"), "{torn",
                  _rec(type="run-end", status="complete"))
    assert [r["type"] for r in read_ledger(path)] == ["run-start", "run-end"]
    with pytest.raises(LedgerError, match=r"ledger.jsonl line 2 is not valid JSON"):
        list(read_ledger(path, strict=True))


def test_a_torn_last_line_is_skipped_in_both_modes(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    path.write_text(_rec(type="run-start") + "\n" + _rec(type="run-end")[:15])
    assert [r["type"] for r in read_ledger(path)] == ["run-start"]
    strict = read_ledger(path, strict=True)
    assert [r["type"] for r in strict] == ["run-start"] and "line 2 is incomplete" in strict.warnings[0]


def test_schema_checks_are_strict_only(tmp_path: Path) -> None:
    path = _write(tmp_path / "ledger.jsonl", _rec(type="mystery"), "[1, 2]")
    assert [r["type"] for r in read_ledger(path)] == ["mystery"]  # records as written
    with pytest.raises(LedgerError, match="line 1: unknown record type 'mystery'"):
        list(read_ledger(path, strict=True))


def test_a_missing_ledger_is_empty_when_lenient_and_named_when_strict(tmp_path: Path) -> None:
    assert list(read_ledger(tmp_path / "ledger.jsonl")) == []
    with pytest.raises(LedgerError, match="ledger.jsonl does not exist"):
        read_ledger(tmp_path / "ledger.jsonl", strict=True)


def test_strict_records_carry_their_line_and_lenient_ones_are_as_written(tmp_path: Path) -> None:
    path = _write(tmp_path / "ledger.jsonl", _rec(type="run-start"), "",
                  _rec(type="attempt", outcome="cache-hit", start=2.0))
    lenient, strict = list(read_ledger(path)), list(read_ledger(path, strict=True))
    assert "_line" not in lenient[0] and [r["_line"] for r in strict] == [1, 3]
    assert lenient[1]["phases"]["denoise"] == 0.0 and lenient[1]["end"] == 2.0  # hits expanded


def test_one_reader_and_one_table_of_record_types() -> None:
    assert pipeline.ledger.RECORD_TYPES is RECORD_TYPES
    assert not hasattr(pipeline.reports.ledger, "RECORD_TYPES")
    assert not hasattr(pipeline.reports.ledger, "read_ledger")  # its whole-ledger reader: load_ledger
    assert pipeline.reports.ledger.LedgerStream is pipeline.ledger.LedgerStream
