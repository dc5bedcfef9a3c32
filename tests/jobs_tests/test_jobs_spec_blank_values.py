"""Blank values in a job spec are refused, each once, naming the file, line and key; a null
ray.address still means a local Ray."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from jobs.spec import SpecError, load_job_spec

BASE = """
name: nightly
manifest: m.parquet
model: kontext-tiny
output: out
"""


def write_spec(folder: Path, extra: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "m.parquet").write_bytes(b"not read by validation")
    path = folder / "job.yaml"
    path.write_text(textwrap.dedent(BASE).lstrip("\n") + textwrap.dedent(extra).lstrip("\n"))
    return path


def line_of(path: Path, needle: str) -> int:
    return next(i + 1 for i, line in enumerate(path.read_text().splitlines()) if needle in line)


# ----------------------------------------------------------------------------- blank values


@pytest.mark.parametrize(
    "extra, key, needle",
    [
        ("budget:\n  amount:\n  currency: USD\n", "budget.amount", "amount:"),
        ("budget: {amount: , currency: USD}\n", "budget.amount", "budget:"),
        ("budget:\n", "budget", "budget:"),
        ("schedule:\n  cron:\n  timezone: Europe/London\n", "schedule.cron", "cron:"),
        ("schedule:\n  cron: '0 2 * * *'\n  timezone:\n", "schedule.timezone", "timezone:"),
        ("schedule:\n  cron: '0 2 * * *'\n  timezone: ' '\n", "schedule.timezone", "timezone:"),
        ("retention:\n  keep_runs:\n", "retention.keep_runs", "keep_runs:"),
        ("retention: {}\n", "retention", "retention:"),
        ("store: ''\n", "store", "store:"),
        ("sampler:\n  batch_size:\n", "sampler.batch_size", "batch_size:"),
        ("image_roots: []\n", "image_roots", "image_roots:"),
        ("ray:\n  address: ''\n", "ray.address", "address:"),
    ],
)
def test_a_blank_value_is_a_spec_error_naming_file_line_and_key(
    tmp_path: Path, extra: str, key: str, needle: str
) -> None:
    path = write_spec(tmp_path, extra)
    with pytest.raises(SpecError) as info:
        load_job_spec(path)
    (problem,) = info.value.problems  # reported once, not again as "missing"
    assert problem.key == key and problem.line == line_of(path, needle)
    assert str(problem) == (
        f"{path}:{problem.line}: {key}: {key} is empty: give a value or remove the key"
    )


def test_blank_required_keys_are_reported_once_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("name:\nbuild:\nmodel: kontext-tiny\noutput: out\n")
    with pytest.raises(SpecError) as info:
        load_job_spec(path, check_files=False)
    assert [(p.key, p.line, p.message) for p in info.value.problems] == [
        ("name", 1, "name is empty: give a value or remove the key"),
        ("build", 2, "build is empty: give a value or remove the key"),
    ]


def test_a_null_ray_address_still_means_a_local_ray(tmp_path: Path) -> None:
    # The shipped example documents `address: null` as "a local Ray per run".
    spec = load_job_spec(write_spec(tmp_path, "ray:\n  address: null\n  device: auto\n"))
    assert spec.ray.address is None and spec.ray.device == "auto"
