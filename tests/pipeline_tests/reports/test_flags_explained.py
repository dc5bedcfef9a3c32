"""Each review flag is explained: a tooltip on every flag and a legend of the flags
on the page, a sentence each (what it means, what to do); and validation can warn about the
sources a model will squash (pipeline.source_sizes.size_warnings), before the run."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from PIL import Image
from synthetic_runs import make_synthetic_run

import kontext_core
from manifests.schema import ManifestRow
from pipeline.reports import generate_reports
from pipeline.reports.review_page import FLAG_HELP
from pipeline.source_sizes import size_warnings


class Page(HTMLParser):
    """Flag tooltips of the tiles, and the legend's (term, sentence) pairs."""

    def __init__(self) -> None:
        super().__init__()
        self.tooltips: list[tuple[str, str | None]] = []
        self.legend: list[list[str]] = []
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "dl" and a.get("class") == "flag-legend":
            self._in = "legend"
        elif tag == "li" and "flag" in (a.get("class") or "").split() and self._in != "legend":
            self.tooltips.append(("", a.get("title")))
            self._in = "tooltip"
        elif tag in ("dt", "dd") and self._in == "legend":
            if tag == "dt":
                self.legend.append([])

    def handle_endtag(self, tag):
        if tag in ("dl", "li") and self._in in ("legend", "tooltip") and \
                (tag == "dl") == (self._in == "legend"):
            self._in = None

    def handle_data(self, data):
        if self._in == "tooltip":
            self.tooltips[-1] = (self.tooltips[-1][0] + data, self.tooltips[-1][1])
        elif self._in == "legend" and self.legend and data.strip():
            self.legend[-1].append(data)


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Page:
    out = tmp_path_factory.mktemp("flags") / "out"
    run = make_synthetic_run(out, products=3, variants=4, failed=(1,), unchanged=(5,), spread=(6,))
    # Product 2's source becomes a wide photo: its square outputs are 'reframed'.
    Image.new("RGB", (720, 477), (90, 120, 200)).save(out / "sources" / "product-2.png")
    outputs = generate_reports(run.run_dir, progress=False)
    parsed = Page()
    parsed.feed(outputs.review_page.read_text(encoding="utf-8"))
    return parsed


def test_every_flag_on_a_tile_has_its_explanation_as_tooltip(page):
    shown = {name for name, _ in page.tooltips}
    assert {"failed", "unchanged", "spread", "reframed"} <= shown
    for name, title in page.tooltips:
        assert title == FLAG_HELP[name], name


def test_the_legend_explains_each_flag_on_the_page_once_in_a_fixed_order(page):
    shown = {name for name, _ in page.tooltips}
    assert page.legend == [[flag, FLAG_HELP[flag]] for flag in FLAG_HELP if flag in shown]
    reframed = dict(page.legend)["reframed"]
    assert "aspect ratio" in reframed and "crop or pad such sources" in reframed


def test_each_explanation_says_what_it_means_and_what_to_do():
    for flag, text in FLAG_HELP.items():
        sentences = [s for s in text.split(". ") if s]
        assert len(sentences) >= 2, flag


def rows(*specs) -> list[ManifestRow]:
    return [ManifestRow(i, f"r{i}", str(image), "edit", 0, width=w, height=h)
            for i, (image, w, h) in enumerate(specs)]


@pytest.fixture
def images(tmp_path):
    wide, square, turned = tmp_path / "wide.jpg", tmp_path / "square.png", tmp_path / "turned.jpg"
    Image.new("RGB", (720, 477)).save(wide)
    Image.new("RGB", (300, 300)).save(square)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 477x720, shown turned: 720x477
    Image.new("RGB", (477, 720)).save(turned, exif=exif)
    return wide, square, turned


def test_size_warnings_name_the_squashed_sources_of_a_fixed_size_model(images, tmp_path):
    wide, square, turned = images
    tiny = kontext_core.resolve_model("kontext-tiny").preset
    warnings = size_warnings(rows((wide, None, None), (wide, None, None), (square, None, None),
                                  (turned, None, None), (tmp_path / "missing.png", None, None),
                                  ("s3://bucket/x.png", None, None)), tiny)
    assert warnings == [
        f"row 0 (id 'r0') and 1 more row(s): source {wide} is 720x477 (1.51:1) but kontext-tiny makes "
        "it 64x64 (1.00:1), so the product is squashed or stretched by 34% and the review page "
        "will flag it 'reframed'; crop or pad the source to 1:1 before the run",
        f"row 3 (id 'r3'): source {turned} is 720x477 (1.51:1) but kontext-tiny makes it 64x64 "
        "(1.00:1), so the product is squashed or stretched by 34% and the review page will "
        "flag it 'reframed'; crop or pad the source to 1:1 before the run",
    ]


def test_size_warnings_follow_the_full_models_snapping_and_the_rows_sizes(images, tmp_path):
    wide, square, _ = images
    dev = kontext_core.load_preset("flux.1-kontext-dev")
    panorama = tmp_path / "panorama.png"
    Image.new("RGB", (2000, 400)).save(panorama)
    warnings = size_warnings(rows((wide, None, None), (panorama, None, None),
                                  (square, 1024, 512)), dev)
    assert warnings == [
        f"row 1 (id 'r1'): source {panorama} is 2000x400 (5.00:1) but flux.1-kontext-dev makes it "
        "1568x672 (2.33:1), so the product is squashed or stretched by 53% and the review page "
        "will flag it 'reframed'; crop or pad the source to 7:3 before the run or set the "
        "row's width and height to the source's shape (multiples of 16)",
        f"row 2 (id 'r2'): source {square} is 300x300 (1.00:1) but flux.1-kontext-dev makes it "
        "1024x512 (2.00:1), so the product is squashed or stretched by 100% and the review "
        "page will flag it 'reframed'; crop or pad the source to 2:1 before the run or set "
        "the row's width and height to the source's shape (multiples of 16)",
    ]


def test_size_warnings_list_a_limit_then_count_the_rest(tmp_path):
    tiny = kontext_core.resolve_model("kontext-tiny").preset
    specs = []
    for i in range(5):
        Image.new("RGB", (200 + i, 100)).save(tmp_path / f"w{i}.png")
        specs.append((tmp_path / f"w{i}.png", None, None))
    warnings = size_warnings(rows(*specs), tiny, limit=2)
    assert len(warnings) == 3
    assert warnings[-1] == ("... and 3 more source image(s) whose shape kontext-tiny changes "
                            "(not listed)")


def test_a_checked_manifest_is_warned_about_for_its_model(images, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.manifest_input import check_manifest
    from pipeline.source_sizes import manifest_size_warnings

    manifest = tmp_path / "m.parquet"
    pq.write_table(pa.table({"image": ["wide.jpg", "square.png", "gone.png"],
                             "instruction": ["a", "b", "c"],
                             "seed": pa.array([0, 1, 2], pa.int64())}), manifest)
    (warning,) = manifest_size_warnings(check_manifest(str(manifest)), "kontext-tiny")
    assert warning.startswith(f"row 0 (id '8a653e735e403e67'): source {tmp_path / 'wide.jpg'} is 720x477")


def test_job_validate_warns_about_squashed_sources(images, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs import cli

    pq.write_table(pa.table({"image": ["wide.jpg", "square.png"], "instruction": ["a", "b"],
                             "seed": pa.array([0, 1], pa.int64()),
                             "row_id": ["mug--red--0", "lamp--red--0"]}), tmp_path / "m.parquet")
    spec = tmp_path / "nightly.yaml"
    spec.write_text("name: nightly\nmanifest: m.parquet\nmodel: kontext-tiny\noutput: out\n")
    assert cli.main(["job", "validate", str(spec)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [f"kontext-batch job validate: warning: row 0 (id 'mug--red--0'): source "
                   f"{tmp_path / 'wide.jpg'} is 720x477 (1.51:1) but kontext-tiny makes it 64x64 "
                   "(1.00:1), so the product is squashed or stretched by 34% and the review page "
                   "will flag it 'reframed'; crop or pad the source to 1:1 before the run"]
