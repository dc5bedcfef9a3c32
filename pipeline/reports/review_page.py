"""The static review page (review.html + review.js + review.css in the run directory).

No server: open the file in a browser. Every piece of text that came from a manifest, ledger or
file is escaped with html.escape; row data is embedded as JSON with <, > and & written as
\\u003c, \\u003e, \\u0026, inside a non-executed <script type="application/json"> block. The
Content-Security-Policy allows scripts and styles only from files next to the page.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict
from html import escape
from pathlib import Path
from typing import Any

from pipeline.chains import parent_row_id

from .changes import ReviewThresholds
from .decisions_view import decision_summary
from .report_doc import atomic_write
from .report_render import money, report_html_fragment
from .review_assets import REVIEW_CSS, REVIEW_JS
from .review_build import ReviewBuild, RowReview
from .rows import ReviewScope

# One sentence per flag: what it means, then what to do (the tiles' tooltips and the legend).
FLAG_HELP: dict[str, str] = {
    "failed": "The row failed; its reason is on the tile. Fix what the reason names (the source "
              "file, the instruction, the seed) and run the same command again.",
    "unchanged": "The output is almost the same as the source (mean difference below "
                 "unchanged_mean_diff): the edit did not happen. Reject it and redo the row with "
                 "another seed or a more explicit instruction.",
    "spread": "The change covers nearly the whole frame (above spread_fraction), so the product "
              "itself was probably re-rendered or drifted. Compare the product with the source "
              "and reject the output if it is no longer the same item.",
    "blank": "The output is a flat image (pixel spread below blank_std), e.g. black from a "
             "numerical fault. Reject it and redo the row; if many rows are blank, check the "
             "model and the device.",
    "reframed": "The output's shape differs from the source's (aspect ratio off by more than "
                "aspect_tolerance): the model works at its own size, so the product is cropped, "
                "squashed or stretched. Check its proportions; crop or pad such sources to the "
                "model's shape before the run (validation warns about them).",
    "missing-output": "The row is recorded as done but its output file could not be read "
                      "(moved, deleted or damaged in the store). Run the same command again to "
                      "regenerate it.",
    "no-source": "The source image could not be read when this page was built, so there is no "
                 "heat map and no change check. Check that the source path is still there and "
                 "readable, then rebuild the page (kontext-batch report RUN_DIR).",
    "no-provenance": "The output file carries no embedded parameters, so it cannot be traced "
                     "back to its row. Regenerate it if the file's origin matters.",
    "provenance-mismatch": "The instruction or seed embedded in the output differs from the "
                           "row's, so the file may belong to another row. Reject it and redo "
                           "the row.",
}
TEXT_CUT_HELP = ("{name} saw only the start of the instruction (its token limit). Not counted as "
                 "flagged; if the cut-off words matter, shorten the instruction.")

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "base-uri 'none'; form-action 'none'")


def json_for_html(value: Any) -> str:
    """JSON that cannot end its <script> block or open markup: <, >, & as \\u escapes."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, allow_nan=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _attr(value: Any) -> str:
    return escape(str(value), quote=True)


def _dl(pairs: Iterable[tuple[str, Any]]) -> str:
    return "<dl>" + "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in pairs if v not in (None, "")) + "</dl>"


def _figure(src: str | None, caption: str, alt: str, link: str | None = None) -> str:
    if src is None:
        return (f'<figure><div class="placeholder" role="img" aria-label="{_attr(alt)}: none">none</div>'
                f"<figcaption>{escape(caption)}</figcaption></figure>")
    img = f'<img src="{_attr(src)}" alt="{_attr(alt)}" loading="lazy">'
    if link:
        img = f'<a href="{_attr(link)}">{img}</a>'
    return f"<figure>{img}<figcaption>{escape(caption)}</figcaption></figure>"


def _decision(d: dict[str, Any] | None, status: str) -> str:
    """The row's last decision when the page was built (read-only here)."""
    if status not in ("done", "cache-hit"):
        return ""
    if d is None:
        return '<p class="decision decision-none">waiting for review</p>'
    text = f"{d['decision']} by {d['reviewer']}" + (f": {d['note']}" if d.get("note") else "")
    return f'<p class="decision decision-{_attr(d["decision"])}">{escape(text)}</p>'


def _tile(index: int, r: RowReview, currency: str, decision: dict[str, Any] | None = None) -> str:
    v = r.view
    classes = f"tile status-{v.status}" + (" flagged" if r.flagged and not r.failed else "")
    if v.status in ("failed", "not-run") or r.thumb is None:
        label = {"failed": "FAILED", "not-run": "NOT RUN"}.get(v.status, "MISSING")
        detail = (f"{v.error_class or 'error'}: {v.reason or 'no reason recorded'}" if v.status == "failed"
                  else (r.notes[0] if r.notes else ""))
        output = (f'<figure><div class="placeholder {escape(v.status)}" role="img" aria-label="{_attr(label)}">'
                  f"{escape(label)}<small>{escape(detail)}</small></div><figcaption>output</figcaption></figure>")
    else:
        output = _figure(r.thumb, "output", f"output of row {v.row_id}", r.output_link)
    parent = parent_row_id(v.image)  # a chain's step: its source is the previous step's output
    source_caption = "source" if parent is None else f"source: output of row {parent}"
    images = output + _figure(r.source_thumb, source_caption, f"source of row {v.row_id}")
    images += _figure(r.heat, "what changed", f"difference heat map of row {v.row_id}")
    cost = money(v.cost, currency) if v.status != "cache-hit" else f"{money(0.0, currency)} (cached)"
    meta = " · ".join(x for x in (
        f"variant {v.variant}" if v.variant else "", f"seed {v.seed}", cost,
        f"{v.attempts} attempt{'s' if v.attempts != 1 else ''}") if x)
    flags = ""
    if r.flags:
        flags = '<ul class="flags">' + "".join(
            f'<li class="flag flag-{_attr(f)}"{_help_title(f)}>{escape(f)}</li>'
            for f in r.flags) + "</ul>"
    flags += _text_cuts(v.text_cuts)
    if r.chain:
        flags += f'<p class="chain"><strong>chain:</strong> {escape(r.chain)}</p>'
    if v.notes:
        flags += f'<p class="input-notes"><strong>input:</strong> {escape(v.notes)}</p>'
    details = _dl([
        ("row id", v.row_id), ("row index", v.row_index), ("product", v.product_id), ("variant", v.variant),
        ("status", v.status), ("attempts", v.attempts), ("error class", v.error_class), ("reason", v.reason),
        ("model seconds", f"{v.busy_seconds:.2f}"), ("cost", cost), ("key", v.key), ("source", v.image),
        ("chain", r.chain),
        ("output", v.output_uri),
        ("mean difference", None if r.mean_diff is None else f"{r.mean_diff:.4f}"),
        ("changed fraction", None if r.changed_fraction is None else f"{r.changed_fraction:.3f}"),
        ("sheet", r.sheet), ("notes", "; ".join(r.notes)), ("input notes", v.notes),
        ("instruction cut at", " and ".join(f"{name}'s token limit" for name in v.text_cuts)),
        ("provenance", None if r.provenance is None else json.dumps(r.provenance, sort_keys=True, ensure_ascii=False)),
        *[(k, val) for k, val in sorted(v.meta.items())],
    ])
    return (
        f'<article class="{classes}" id="row-{index}" data-tile="{index}" data-status="{_attr(v.status)}" '
        f'data-flags="{_attr(" ".join(r.flags))}">'
        f'<div class="head"><span class="status">{escape(v.status)}</span><span class="rowid">row {escape(v.row_id)}</span></div>'
        f'<div class="imgs">{images}</div>'
        f'<p class="instruction">{escape(v.instruction)}</p><p class="meta">{escape(meta)}</p>{flags}'
        f"{_decision(decision, v.status)}"
        f"<details><summary>details</summary>{details}</details></article>"
    )


def _text_cuts(cuts: list[str]) -> str:
    """Which text encoders saw only the start of the instruction (T5: the prompt tokens the
    transformer attends to; CLIP: the pooled embedding). Shown, not counted as flagged: with
    kontext-tiny's 24-character CLIP most catalog instructions are cut there."""
    if not cuts:
        return ""
    items = "".join(f'<li class="flag text-cut" title="{_attr(TEXT_CUT_HELP.format(name=name))}">'
                    f"{escape(name)} cut</li>" for name in cuts)
    return f'<ul class="flags text-cuts" aria-label="instruction cut at the text encoders\' token limits">{items}</ul>'


def _help_title(flag: str) -> str:
    help_text = FLAG_HELP.get(flag)
    return f' title="{_attr(help_text)}"' if help_text else ""


def flag_legend_html(rows: list[RowReview]) -> str:
    """What each flag shown on the page means and what to do about it ('' when none is)."""
    shown = {f for r in rows for f in r.flags}
    cuts = [name for name in ("T5", "CLIP") if any(name in r.view.text_cuts for r in rows)]
    items = [(flag, text) for flag, text in FLAG_HELP.items() if flag in shown]
    items += [(f"{name} cut", TEXT_CUT_HELP.format(name=name)) for name in cuts]
    items += [(flag, "No explanation recorded for this flag.") for flag in sorted(shown - set(FLAG_HELP))]
    if not items:
        return ""
    entries = "".join(f'<dt><span class="flag flag-{_attr(flag)}">{escape(flag)}</span></dt>'
                      f"<dd>{escape(text)}</dd>" for flag, text in items)
    return (f'<section id="flag-legend"><h2>What the flags mean</h2>'
            f'<dl class="flag-legend">{entries}</dl></section>\n')


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def scope_html(scope: ReviewScope, run_id: str) -> str:
    """Which rows the page shows and, counted, the rest: the counts add up to the run's rows."""
    shown, left = scope.shown, scope.left_out
    hits, not_run, left_total = scope.by_status["cache-hit"], scope.by_status["not-run"], sum(left.values())
    items = [
        f"Shown: {_plural(scope.reviewed, 'row')} to review after this run: "
        f"{shown['done']:,} generated in this run and {shown['failed']:,} failed.",
        f"Not shown: {_plural(hits, 'cache hit')}. Their outputs were reviewed in the run that "
        "generated them, or are shown here under the row of this run with the same inputs; "
        "results.parquet lists them (status cache-hit) with their output paths.",
        f"Not shown: {_plural(not_run, 'row')} not run (nothing to review); results.parquet lists them "
        "(status not-run).",
    ]
    if left_total:
        items.append(
            f"Left out: {_plural(left_total, 'row')} to review ({left['done']:,} generated, "
            f"{left['failed']:,} failed) above this page's limit of {scope.max_rows:,} rows (failed rows "
            "come first, then generated rows, in manifest order). results.parquet lists them; to see "
            f"them here, rebuild the page with a higher limit: kontext-batch report OUT/runs/{run_id} "
            "--max-review-rows N (0: no limit).")
    else:
        items.append("Left out: none; every row to review is shown"
                     + (f" (limit {scope.max_rows:,} rows)." if scope.max_rows else " (no limit)."))
    total = (f"{scope.reviewed:,} shown + {_plural(hits, 'cache hit')} + {not_run:,} not run + {left_total:,} left out "
             f"= {scope.total:,} rows.")
    return ("<ul>" + "".join(f"<li>{escape(i)}</li>" for i in items) + "</ul>"
            f'<p class="total">{escape(total)}</p>')


def scope_data(scope: ReviewScope) -> dict[str, Any]:
    return {"max_rows": scope.max_rows, "total": scope.total, "by_status": dict(scope.by_status),
            "shown": dict(scope.shown), "left_out": scope.left_out}


def _cut_counts(rows: list[RowReview]) -> list[str]:
    """Summary items: shown rows whose instruction T5 / CLIP cut (none: no item)."""
    counts = {name: sum(name in r.view.text_cuts for r in rows) for name in ("T5", "CLIP")}
    return [f"{n} instruction{'s' if n != 1 else ''} cut at {name}'s limit" for name, n in counts.items() if n]


def flag_counts(rows: list[RowReview]) -> list[str]:
    """Summary items: shown rows per flag ("3 unchanged"), most frequent first."""
    counts = Counter(f for r in rows for f in r.flags if f != "failed")
    return [f"{n} {flag}" for flag, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def _notes_count(rows: list[RowReview]) -> list[str]:
    noted = sum(bool(r.view.notes) for r in rows)
    return [f"{noted} with input notes"] if noted else []


def render_review_html(build: ReviewBuild, report: dict[str, Any], thresholds: ReviewThresholds,
                       generated_at: str | None = None) -> str:
    figures = report["figures"]
    run_id = str(figures["run"]["run_id"])
    currency = figures["cost"]["currency"]
    rows = build.rows
    failed = sum(r.failed for r in rows)
    flagged = sum(r.flagged and not r.failed for r in rows)
    data = {
        "run_id": run_id,
        "scope": None if build.scope is None else scope_data(build.scope),
        "thresholds": asdict(thresholds),
        "rows": [{
            "tile": i, "row_id": r.view.row_id, "status": r.view.status, "failed": r.failed,
            "flagged": r.flagged and not r.failed, "flags": r.flags, "instruction": r.view.instruction,
            "seed": r.view.seed, "product_id": r.view.product_id, "variant": r.view.variant,
            "cost": round(r.view.cost, 9), "mean_diff": r.mean_diff, "changed_fraction": r.changed_fraction,
            "thumb": r.thumb, "heat": r.heat, "sheet": r.sheet, "text_cuts": r.view.text_cuts,
            "notes": r.view.notes, "decision": build.decisions.get(r.view.row_id),
            **({"chain": r.chain} if r.chain else {}),
        } for i, r in enumerate(rows)],
    }
    summary = " ".join(f"<span>{escape(s)}</span>" for s in (
        f"{figures['rows']['total']} rows", f"{figures['rows']['done']} done",
        f"{figures['rows']['cache_hits']} cache hits", f"{figures['rows']['failed']} failed",
        f"{flagged} flagged", *flag_counts(rows), *_cut_counts(rows),
        *_notes_count(rows), *decision_summary(build.decision_counts),
        f"cost {money(figures['cost']['total'], currency)}",
        f"status {figures['run']['status']}"))
    sheets = "".join(
        f"<h3>{escape(g.title)} ({g.rows} rows)</h3>" + "".join(
            f'<a href="{_attr(p)}"><img src="{_attr(p)}" alt="{_attr("contact sheet: " + g.title)}" loading="lazy"></a>'
            for p in g.paths)
        for g in build.sheets)
    notes = build.notes + report.get("notes", [])
    notes_html = ("<ul>" + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>") if notes else "<p>none</p>"
    threshold_html = _dl((k, v) for k, v in asdict(thresholds).items())
    footer = f"<p><em>Generated {escape(generated_at)}.</em></p>" if generated_at else ""
    scope = (f'<section id="scope"><h2>Rows on this page</h2>{scope_html(build.scope, run_id)}</section>\n'
             if build.scope is not None else "")
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{_attr(CSP)}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>Review: run {escape(run_id)}</title>\n"
        '<link rel="stylesheet" href="review.css">\n<script src="review.js" defer></script>\n</head>\n<body>\n'
        f'<header class="page"><h1>Review: run {escape(run_id)}</h1><div class="summary">{summary}</div>\n'
        '<nav class="filters" aria-label="filter rows">'
        f'<button type="button" data-filter="all" aria-pressed="true">All ({len(rows)})</button>'
        f'<button type="button" data-filter="failed" aria-pressed="false">Failed ({failed})</button>'
        f'<button type="button" data-filter="flagged" aria-pressed="false">Flagged ({flagged})</button>'
        f'<span id="showing" aria-live="polite">showing {len(rows)} of {len(rows)} rows</span></nav></header>\n'
        "<main>\n"
        f"{scope}"
        f"{flag_legend_html(rows)}"
        f'<section id="rows"><h2>Rows</h2><div class="tiles">\n'
        + "\n".join(_tile(i, r, currency, build.decisions.get(r.view.row_id)) for i, r in enumerate(rows))
        + "\n</div></section>\n"
        f'<section id="sheets" class="sheets"><h2>Contact sheets</h2>{sheets}</section>\n'
        f'<section id="report"><h2>Cost and usage</h2>{report_html_fragment(report)}</section>\n'
        f'<section id="thresholds"><h2>Flag thresholds</h2>{threshold_html}</section>\n'
        f'<section id="notes"><h2>Notes</h2>{notes_html}</section>\n{footer}'
        "</main>\n"
        f'<script type="application/json" id="review-data">{json_for_html(data)}</script>\n'
        "</body></html>\n"
    )


def write_review_page(run_dir: str | Path, build: ReviewBuild, report: dict[str, Any],
                      thresholds: ReviewThresholds, generated_at: str | None = None) -> Path:
    """Write review.html, review.js and review.css into the run directory."""
    run_dir = Path(run_dir)
    atomic_write(run_dir / "review.js", REVIEW_JS.encode("utf-8"))
    atomic_write(run_dir / "review.css", REVIEW_CSS.encode("utf-8"))
    page = run_dir / "review.html"
    atomic_write(page, render_review_html(build, report, thresholds, generated_at).encode("utf-8"))
    return page
