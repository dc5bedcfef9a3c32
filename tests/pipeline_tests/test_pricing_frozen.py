"""A plain CLI-style run freezes its prices: editing the pricing file later changes no figure."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from pipeline_helpers import make_manifest, run_once

from pipeline.reports import build_report, generate_reports, load_pricing
from pipeline.reports import pricing as pricing_module
from pipeline.reports.command import main as report_main


def test_report_of_an_old_run_ignores_later_pricing_edits(tmp_path: Path, monkeypatch, capsys) -> None:
    shipped = load_pricing().to_dict()
    default_file = tmp_path / "pricing.yaml"  # stands in for pipeline/pricing.yaml
    default_file.write_text(yaml.safe_dump(shipped), encoding="utf-8")
    monkeypatch.setattr(pricing_module, "DEFAULT_PRICING_FILE", default_file)

    manifest = make_manifest(tmp_path / "m", products=1, variants=2)
    summary = run_once(manifest, tmp_path / "out", reports=True)
    assert summary.exit_code == 0 and summary.report_error is None
    config = json.loads((summary.run_dir / "config.json").read_text())
    assert config["pricing"] == shipped  # no --pricing given: the default table, frozen
    stored = json.loads((summary.run_dir / "report.json").read_text())
    assert stored["figures"]["devices"]["CPU"]["price_per_hour"] == shipped["device_hour"]["CPU"]
    assert stored["figures"]["cost"]["total"] > 0

    # Someone edits the pricing file after the run.
    edited = {**shipped, "device_hour": {**shipped["device_hour"], "CPU": 3600.0}}
    default_file.write_text(yaml.safe_dump(edited), encoding="utf-8")
    assert load_pricing().device_hour["CPU"] == 3600.0
    repriced = build_report(summary.run_dir, pricing=load_pricing())["figures"]  # the edit would matter
    assert repriced["cost"]["total"] != stored["figures"]["cost"]["total"]

    capsys.readouterr()
    assert report_main([str(summary.run_dir), "--verify"]) == 0, capsys.readouterr().out
    rebuilt = generate_reports(summary.run_dir, review=False, progress=False).report
    assert rebuilt["figures"] == stored["figures"]
    assert report_main([str(summary.run_dir), "--verify"]) == 0


def test_a_resumed_run_keeps_the_prices_it_started_with(tmp_path: Path, capsys) -> None:
    manifest = make_manifest(tmp_path / "m", products=1, variants=2)
    first = run_once(manifest, tmp_path / "out", reports=False)
    started_with = json.loads((first.run_dir / "config.json").read_text())["pricing"]
    dearer = tmp_path / "dearer.yaml"
    dearer.write_text(yaml.safe_dump({**started_with, "device_hour": {
        **started_with["device_hour"], "CPU": started_with["device_hour"]["CPU"] * 10}}))
    capsys.readouterr()
    # The same run again (its id given explicitly), with another pricing file.
    again = run_once(manifest, tmp_path / "out", reports=False, run_id=first.run_id,
                     pricing=str(dearer))
    assert again.run_dir == first.run_dir
    assert json.loads((first.run_dir / "config.json").read_text())["pricing"] == started_with
    note = capsys.readouterr().err
    assert "keeps the prices frozen when it started" in note and "dearer.yaml" in note
