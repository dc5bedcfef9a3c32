"""A variants file's check lists every problem at once: an unknown top-level key,
each bad field of a template, a nameless entry's other faults, a duplicate name of an entry that
is also bad, and the unknown template fields of the other variants."""

from __future__ import annotations

import pytest
from PIL import Image

from manifests import BuildError
from manifests.build import check_build_inputs, load_variants
from manifests.template import parse_template, template_problems


def write(path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.fixture
def catalog(tmp_path) -> str:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    return write(tmp_path / "c.csv", "product_id,image\na,a.png\n")


def reasons(err: BuildError, source: str) -> list[str]:
    return [p.reason.removeprefix(f"variants file {source!r}").lstrip() for p in err.problems]


def test_template_problems_lists_every_bad_field_in_order():
    assert template_problems("put {product.x} on {0} with {x!z} and {ok}") == [
        "field {product.x} uses attribute or index access, which templates do not allow; "
        "use a plain field name such as {product}",
        "positional field {0} is not allowed; name the field, e.g. {product}",
        "field {x} has an unknown conversion !z",
    ]
    assert template_problems("place the {product} on {backdrop}") == []
    assert parse_template("place the {product}").fields == ("product",)


def test_unknown_top_level_key_does_not_hide_the_variants_problems(tmp_path):
    source = write(
        tmp_path / "v.yaml",
        "variantz: 1\nvariants:\n  - name: red\n    instruction: x\n    steps: 0\n",
    )
    with pytest.raises(BuildError) as err:
        load_variants(source)
    assert reasons(err.value, source) == [
        "line 1: unknown top-level key 'variantz' (did you mean 'variants'?); the file holds "
        "only a 'variants' list, and each variant carries its own settings",
        "line 3, variant 'red': steps must be between 1 and 200 (got 0)",
    ]


def test_each_bad_template_field_is_its_own_problem(tmp_path):
    source = write(tmp_path / "v.yaml", "- name: x\n  instruction: '{a.b} on {0}'\n")
    with pytest.raises(BuildError) as err:
        load_variants(source)
    assert reasons(err.value, source) == [
        "line 1, variant 'x': instruction template: field {a.b} uses attribute or index "
        "access, which templates do not allow; use a plain field name such as {product}",
        "line 1, variant 'x': instruction template: positional field {0} is not allowed; "
        "name the field, e.g. {product}",
    ]


def test_a_nameless_entry_is_still_checked_in_full(tmp_path):
    source = write(tmp_path / "v.yaml", "- instruction: '{a[0]}'\n  steps: 0\n")
    with pytest.raises(BuildError) as err:
        load_variants(source)
    assert reasons(err.value, source) == [
        "line 1: variant has no name; add name: <short id>, e.g. name: red",
        "line 1: instruction template: field {a[0]} uses attribute or index access, which "
        "templates do not allow; use a plain field name such as {product}",
        "line 1: steps must be between 1 and 200 (got 0)",
    ]


def test_a_duplicate_name_is_named_even_when_that_entry_is_also_bad(tmp_path):
    source = write(
        tmp_path / "v.yaml",
        "- name: red\n  instruction: x\n- name: red\n  instruction: y\n  steps: 0\n",
    )
    with pytest.raises(BuildError) as err:
        load_variants(source)
    assert reasons(err.value, source) == [
        "line 3, variant 'red': steps must be between 1 and 200 (got 0)",
        ": variant 'red' is defined twice; variant names must be unique",
    ]


def test_unknown_fields_of_good_variants_come_with_the_bad_variants_problems(tmp_path, catalog):
    source = write(
        tmp_path / "v.yaml",
        "- name: blue\n  instruction: on {backdrop}\n- name: red\n  instruction: x\n  steps: 0\n",
    )
    with pytest.raises(BuildError) as err:
        check_build_inputs(catalog, source)
    assert reasons(err.value, source) == [
        "line 3, variant 'red': steps must be between 1 and 200 (got 0)",
        "variant 'blue': instruction uses field {backdrop}, which neither the catalog nor the "
        "variant provides; available fields: product, product_id, variant",
    ]
    assert str(err.value).startswith("cannot build the manifest (2 problems):")
