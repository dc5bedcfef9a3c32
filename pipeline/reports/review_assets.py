"""The static review page's script and style sheet (static/review.js, static/review.css).

They are separate files, written next to review.html, because the page's Content-Security-Policy
allows only scripts and styles from files ('self'), never inline ones: text from a manifest can
then never run as code. They ship as package data and are read as bytes, so the copies written
into a run directory are the shipped files byte for byte.
"""

from __future__ import annotations

from importlib.resources import files


def _static(name: str) -> str:
    """static/<name> (package data) as UTF-8, read as bytes: no newline translation."""
    return (files(__package__) / "static" / name).read_bytes().decode("utf-8")


REVIEW_JS = _static("review.js")
REVIEW_CSS = _static("review.css")
