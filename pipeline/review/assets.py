"""The served review page: an HTML shell, plus its script and style sheet from static/.

The shell holds no row data: the script fetches rows a page at a time from the JSON API
(20,000 rows stay light) and builds every element with createElement/textContent, so text from
a manifest is never parsed as markup. Keys: j/k next/previous row, a approve, r reject (the
row's note goes with it), d redo, z or Enter zoom, Esc close the zoom.
"""

from __future__ import annotations

from html import escape
from importlib.resources import files
from urllib.parse import quote

FILTER_NAMES = (("product", "product"), ("variant", "variant"), ("flag", "flag"),
                ("decision", "decision"), ("status", "status"))


def page_html(run_id: str, token: str) -> str:
    t = escape(quote(token, safe=""), quote=True)
    selects = "".join(
        f'<label>{escape(label)} <select id="filter-{name}" data-filter="{name}">'
        '<option value="">all</option></select></label>' for name, label in FILTER_NAMES)
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>Review decisions: run {escape(run_id)}</title>\n"
        f'<link rel="stylesheet" href="/app.css?token={t}">\n'
        f'<script src="/app.js?token={t}" defer></script>\n</head>\n<body>\n'
        f'<header class="page"><h1>Review decisions: run {escape(run_id)}</h1>'
        '<div id="counts" class="counts" aria-live="polite"></div>\n'
        f'<nav class="filters" aria-label="filter rows">{selects}</nav>\n'
        '<div class="bulk" aria-label="decide every matching row">'
        '<span>Every matching row:</span>'
        '<button type="button" data-bulk="approve">Approve all matching</button>'
        '<button type="button" data-bulk="reject">Reject all matching</button>'
        '<button type="button" data-bulk="redo">Redo all matching</button>'
        '<input id="bulk-note" type="text" placeholder="note (optional)" maxlength="2000"></div>\n'
        '<div class="pager"><button type="button" id="prev">&larr; previous</button>'
        '<span id="showing">loading&hellip;</span>'
        '<button type="button" id="next">next &rarr;</button>'
        '<span id="message" role="status"></span></div>\n'
        '<p class="keys">Keys: j/k next/previous, a approve, r reject, d redo, z zoom, Esc close.</p>'
        "</header>\n<main><div id=\"tiles\" class=\"tiles\"></div></main>\n"
        '<div id="lightbox" hidden><img id="lightbox-img" alt="zoomed image"></div>\n'
        "</body></html>\n")


def _static(name: str) -> str:
    """static/<name> (package data) as UTF-8, read as bytes so it is served exactly as shipped."""
    return (files(__package__) / "static" / name).read_bytes().decode("utf-8")


APP_JS = _static("app.js")
APP_CSS = _static("app.css")
