"""Job specs with YAML tags or alias bombs: a short problem with the line (exit 2), never a
traceback, and nothing constructed from a tag."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from jobs import cli
from jobs.spec import SpecError, find_job_spec, load_job_spec

HEAD = """\
name: nightly
manifest: m.parquet
model: kontext-tiny
output: out
"""


def write(tmp_path: Path, tail: str, head: str = HEAD) -> Path:
    (tmp_path / "m.parquet").write_bytes(b"not read by validation")
    path = tmp_path / "job.yaml"
    path.write_text(head + textwrap.dedent(tail).lstrip("\n"))
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_job_spec(path, check_files=False)
    return [str(p) for p in info.value.problems]


def test_a_python_tag_is_refused_with_its_line_and_nothing_runs(tmp_path: Path, capsys) -> None:
    marker = tmp_path / "ran"
    path = write(tmp_path, f'store: !!python/object/apply:os.system ["touch {marker}"]\n')
    assert cli.main(["job", "validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:5: store: unknown YAML tag '!!python/object/apply:os.system'" in err
    assert "remove the tag" in err and "Traceback" not in err
    assert not marker.exists()


@pytest.mark.parametrize("tail, expected", [
    ("sampler:\n  steps: !!int abc\n", ":6: sampler.steps: 'abc' cannot be read as !!int"),
    ("retention: {keep_runs: !!bool maybe}\n", ":5: retention.keep_runs: 'maybe' cannot be "
                                                "read as !!bool"),
    ("description: !local text\n", ":5: description: unknown YAML tag '!local'"),
    ("ray: !!set [a]\n", ":5: cannot be read: expected a mapping node"),
])
def test_unknown_or_unreadable_tags_are_one_short_problem(tmp_path: Path, tail: str,
                                                          expected: str) -> None:
    found = problems(write(tmp_path, tail))
    assert len(found) == 1 and expected in found[0], found
    assert len(found[0]) < 300


def test_every_bad_tag_is_reported_at_once_in_line_order(tmp_path: Path) -> None:
    head = HEAD.replace("name: nightly", "name: !env JOB").replace("output: out",
                                                                     "output: !!float x")
    found = problems(write(tmp_path, "", head=head))
    assert [p.split(": ")[0].rsplit(":", 1)[1] for p in found] == ["1", "4"]


def test_a_wrongly_typed_alias_bomb_is_quoted_in_80_characters(tmp_path: Path,
                                                                 capsys) -> None:
    # l4 expands to 10**5 items: its full repr is ~700 kB
    levels = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 10)}]" for n in range(1, 5)]
    path = write(tmp_path, "\n".join(levels) + "\nsampler:\n  steps: *l4\n")
    assert cli.main(["job", "validate", str(path)]) == 2
    err = capsys.readouterr().err
    steps = next(line for line in err.splitlines() if "sampler.steps:" in line)
    assert f"{path}:11: sampler.steps: must be a whole number, got a list [[[" in steps
    assert len(steps.split("got a list ", 1)[1]) <= 80
    assert len(err) < 3000  # one line per unknown key and the capped one


def test_a_name_lookup_skips_a_file_with_a_bad_tag(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("name: !!int abc\n")
    (tmp_path / "other.yaml").write_text("name: wanted\nmodel: kontext-tiny\n")
    assert find_job_spec("wanted", [tmp_path]) == (tmp_path / "other.yaml").resolve()
