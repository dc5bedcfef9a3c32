"""`report --verify` binds the ledger to the store and to report.json, wherever the run folder is.

One real run of the tiny test model (module fixture); every test works on a copy of its folder
(the store is only read, except in the copy the damaged-object test makes of it)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from pipeline_helpers import make_manifest, run_once

from pipeline.reports import generate_reports
from pipeline.reports.command import main as report_main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("verify-bindings")
    summary = run_once(make_manifest(base / "m", products=2, variants=1), base / "out", reports=True)
    assert summary.exit_code == 0 and summary.report_error is None
    return summary


def _copy(run_dir: Path, target: Path) -> Path:
    shutil.copytree(run_dir, target)
    return target


def _verify(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = report_main([*argv, "--verify"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _first_ok(run_dir: Path) -> tuple[list[str], int, dict]:
    lines = (run_dir / "ledger.jsonl").read_text().splitlines()
    for i, line in enumerate(lines):
        rec = json.loads(line)
        if rec["type"] == "attempt" and rec["outcome"] == "ok":
            return lines, i, rec
    raise AssertionError("the run has no ok attempt")


def test_an_untouched_run_verifies_as_absolute_relative_and_copied_path(run, tmp_path, capsys, monkeypatch):
    store = str(run.run_dir.parent.parent / "store")
    code, out, _ = _verify(capsys, str(run.run_dir))
    assert code == 0, out
    assert f"2 ok/cache-hit attempt(s) checked against 2 object(s) in store {store}" in out
    assert "2 key(s) recomputed" in out

    monkeypatch.chdir(run.run_dir)
    code, out, _ = _verify(capsys, ".")
    assert code == 0, out  # was: "written with the prices from <abs>/config.json (pricing)" ... exit 1
    monkeypatch.undo()

    archived = _copy(run.run_dir, tmp_path / "archive" / run.run_dir.name)  # for an auditor
    code, out, _ = _verify(capsys, str(archived))
    assert code == 0, out
    assert f"in store {store} (named by the ledger's output_uri)" in out


@pytest.mark.parametrize("field", ["output_uri", "instruction", "seed", "key"])
def test_a_rewritten_ledger_field_fails_naming_record_field_and_values(run, tmp_path, capsys, field):
    run_dir = _copy(run.run_dir, tmp_path / run.run_dir.name)
    lines, i, rec = _first_ok(run_dir)
    new = {"output_uri": "/elsewhere/edited.png", "instruction": "put the product on the moon",
           "seed": rec["seed"] + 1, "key": hashlib.sha256(b"another").hexdigest()}[field]
    old = rec[field]
    rec[field] = new
    lines[i] = json.dumps(rec, separators=(",", ":"))
    (run_dir / "ledger.jsonl").write_text("\n".join(lines) + "\n")
    generate_reports(run_dir, review=False, progress=False)  # report.json now hashes the edited ledger

    code, out, err = _verify(capsys, str(run_dir))
    assert code == 1, out
    where = f"ledger.jsonl line {i + 1} (row {rec['row_id']}, attempt 1)"
    expected = {
        "output_uri": f"{where}: output_uri: ledger '/elsewhere/edited.png', expected the store path of key",
        "instruction": f"{where}: instruction: ledger 'put the product on the moon', store sidecar {old!r}",
        "seed": f"{where}: seed: ledger {new}, store sidecar {old}",
        "key": f"{where}: key: ledger '{new}', no object of that key in store",
    }[field]
    assert expected in out
    if field in ("instruction", "seed"):  # the key no longer follows from the inputs
        assert f"{where}: key: ledger '{rec['key']}', recomputed " in out
    if field == "key":
        assert f"{where}: output_uri: ledger '{rec['output_uri']}', names key {old}, but the attempt's key is {new}" in out
    assert "changed since report.json" not in err  # the binding caught it, not the hash


def test_a_damaged_store_object_fails_and_names_the_store_checked(run, tmp_path, capsys):
    out_copy = tmp_path / "moved"
    shutil.copytree(run.run_dir.parent.parent, out_copy)  # run folder and store, moved together
    run_dir = out_copy / "runs" / run.run_dir.name
    _, i, rec = _first_ok(run_dir)
    obj = out_copy / "store" / "objects" / rec["key"][:2] / f"{rec['key']}.png"
    data = bytearray(obj.read_bytes())
    before = hashlib.sha256(data).hexdigest()
    data[-20] ^= 0xFF
    obj.write_bytes(bytes(data))

    code, out, _ = _verify(capsys, str(run_dir), "--store", str(out_copy / "store"))
    assert code == 1, out
    assert f"in store {out_copy / 'store'} (given with --store)" in out
    assert (f"ledger.jsonl line {i + 1} (row {rec['row_id']}, attempt 1): sha256: store sidecar sha256 "
            f"{before}, bytes of objects/{rec['key'][:2]}/{rec['key']}.png in the store hash to "
            f"{hashlib.sha256(data).hexdigest()} (damaged or replaced)") in out

    code, _, err = _verify(capsys, str(run_dir), "--store", str(tmp_path / "nowhere"))
    assert code == 2
    assert f"store {tmp_path / 'nowhere'} (given with --store) has no objects/ folder here" in err


def test_a_ledger_changed_after_report_json_fails(run, tmp_path, capsys):
    run_dir = _copy(run.run_dir, tmp_path / run.run_dir.name)
    with open(run_dir / "ledger.jsonl", "a") as handle:
        handle.write("\n")  # the same records, other bytes than report.json was built from
    code, out, err = _verify(capsys, str(run_dir))
    assert code == 1
    assert "ledger.jsonl changed since report.json was written" in err
    assert "ledger.jsonl is not the one report.json was built from (sha256 differs)" in out


def test_report_md_edited_to_another_figure_fails(run, tmp_path, capsys):
    run_dir = _copy(run.run_dir, tmp_path / run.run_dir.name)
    md = run_dir / "report.md"
    lines = md.read_text().splitlines()
    n = next(i for i, line in enumerate(lines) if line.startswith("- **total cost**"))
    edited = lines[n].split(":", 1)[0] + ": $0.0001"
    lines[n] = edited
    md.write_text("\n".join(lines) + "\n")
    code, out, _ = _verify(capsys, str(run_dir))
    assert code == 1
    assert f"report.md line {n + 1}: says {edited!r}, report.json renders " in out
    assert "report.html" not in out.split("does not say what report.json says")[1]
