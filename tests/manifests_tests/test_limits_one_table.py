"""One table of limits (manifests.limits): manifest rows, run flags, job specs, the CLI and the
encoders all follow it, so changing a limit there changes it everywhere."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

import pytest

from jobs import spec as job_spec
from manifests import limits, rules
from pipeline import cli, encode, provenance
from pipeline.errors import ConfigError
from pipeline.runner import RunConfig, check_flags


@pytest.fixture
def narrowed(monkeypatch):
    """Steps 2..50 and guidance 1..5 in the table only."""
    monkeypatch.setattr(limits, "MIN_STEPS", 2)
    monkeypatch.setattr(limits, "MAX_STEPS", 50)
    monkeypatch.setattr(limits, "MIN_GUIDANCE", 1.0)
    monkeypatch.setattr(limits, "MAX_GUIDANCE", 5.0)


def _job_problems(tmp_path: Path, sampler: str) -> dict[str, str]:
    (tmp_path / "m.parquet").write_bytes(b"not read by validation")
    path = tmp_path / "job.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: nightly
        manifest: m.parquet
        model: kontext-tiny
        output: out
        sampler: {sampler}
        """))
    with pytest.raises(job_spec.SpecError) as info:
        job_spec.load_job_spec(path, check_model=False)
    return {p.key: p.message for p in info.value.problems}


def test_manifest_rows_follow_the_table(narrowed):
    assert rules.check_steps(60) == (None, "steps must be between 2 and 50 (got 60)")
    assert rules.check_steps(50) == (50, None)
    assert rules.check_guidance(6.0) == (None, "guidance must be between 1 and 5 (got 6.0)")


def test_run_flags_follow_the_table(narrowed, tmp_path):
    with pytest.raises(ConfigError, match=r"--steps must be between 2 and 50 \(got 60\)"):
        check_flags(RunConfig(manifest="m.parquet", out=str(tmp_path), steps=60))
    with pytest.raises(ConfigError, match=r"--guidance must be between 1 and 5 \(got 0.5\)"):
        check_flags(RunConfig(manifest="m.parquet", out=str(tmp_path), guidance=0.5))
    check_flags(RunConfig(manifest="m.parquet", out=str(tmp_path), steps=50, guidance=5.0))


def test_job_specs_follow_the_table(narrowed, tmp_path):
    problems = _job_problems(tmp_path, "{steps: 60, guidance: 6}")
    assert problems["sampler.steps"] == "must be between 2 and 50, got 60"
    assert problems["sampler.guidance"] == "must be between 1 and 5, got 6.0"


def test_every_format_and_dtype_list_is_the_table():
    """The CLI's choices, the job spec's, the encoders' and provenance's are the table's."""
    parser = argparse.ArgumentParser()
    run = cli.add_run_parser(parser.add_subparsers())
    choices = {a.dest: tuple(a.choices) for a in run._actions if a.choices}
    assert choices["output_format"] == limits.OUTPUT_FORMATS
    assert choices["dtype"] == ("auto", *limits.DTYPES) == job_spec.DTYPES
    assert choices["device"] == limits.DEVICES == job_spec.DEVICES
    assert job_spec.OUTPUT_FORMATS == limits.OUTPUT_FORMATS
    named = set(limits.OUTPUT_FORMATS) | set(limits.FORMAT_ALIASES)
    assert set(provenance.FORMATS) == named
    assert {encode.normalise_format(n) for n in named} == set(limits.OUTPUT_FORMATS)
    assert rules.check_output_format(" JPG ") == ("jpeg", None)
    with pytest.raises(ValueError, match="use one of png, jpeg, webp"):
        encode.normalise_format("gif")
