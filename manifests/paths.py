"""Resolve a manifest's image references safely.

A reference is either a URI whose scheme pyarrow.fs can read (kept as is) or a local path.
Relative paths resolve against the manifest's folder. A local path must stay inside an allowed
root — the manifest's folder plus any ``image_roots`` — after ``..`` segments and symlinks are
resolved, so a manifest cannot reach files its author did not mean to expose.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from urllib.parse import unquote, urlparse

# Schemes pyarrow.fs.FileSystem.from_uri understands. http(s) is not among them.
SUPPORTED_SCHEMES = frozenset({"file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss"})
_ROOTS_SHOWN = 10  # roots named in a refusal; the rest are counted
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


class ImageRefError(ValueError):
    """An image reference that cannot be used; the message says why and what to do."""


def uri_scheme(ref: str) -> str | None:
    """The lower-cased scheme of ``scheme://...`` references, else None."""
    match = _SCHEME.match(ref)
    return match.group(1).lower() if match else None


def is_remote_uri(ref: str) -> bool:
    scheme = uri_scheme(ref)
    return scheme is not None and scheme != "file"


def is_within(path: str, root: str) -> bool:
    """True when absolute, normalised ``path`` is ``root`` or lies below it."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class RootSet:
    """Answers "is ``path`` within one of ``roots``?" (``is_within`` against each) in one set
    lookup per separator of ``path``, not one comparison per root: a built catalog's manifest
    brings a root per image folder (tens of thousands), checked for every row."""

    def __init__(self, roots: Iterable[str] = ()) -> None:
        self._exact: set[str] = set()
        self._keys: set[str] = set()
        for root in roots:
            self.add(root)

    def add(self, root: str) -> None:
        self._exact.add(root)
        self._keys.add(root.rstrip(os.sep))

    def __contains__(self, path: str) -> bool:
        if path in self._exact:
            return True
        # path.startswith(key + sep) holds exactly when path[:i] == key at a separator i.
        i = path.find(os.sep)
        while i >= 0:
            if path[:i] in self._keys:
                return True
            i = path.find(os.sep, i + 1)
        return False


def covering_roots(roots: Iterable[str]) -> list[str]:
    """``roots`` less those within another of them (they allow nothing more), sorted."""
    kept: list[str] = []
    covered = RootSet()
    for root in sorted(set(roots), key=len):  # a root lies within shorter ones only
        if root not in covered:
            kept.append(root)
            covered.add(root)
    return sorted(kept)


def manifest_folder(manifest_path: str | os.PathLike) -> str:
    """The folder relative image paths resolve against."""
    return os.path.dirname(os.path.abspath(os.fspath(manifest_path)))


class ImageResolver:
    """Resolves image references for one manifest; caches folder lookups (many rows share one)."""

    def __init__(
        self,
        base_dir: str | os.PathLike,
        image_roots: Sequence[str | os.PathLike] | None = None,
        roots_setting: str = "image_roots",
    ) -> None:
        # roots_setting: how the caller's user allows more roots (the CLI's --image-root, a
        # job's image_roots), named in refusals.
        self.roots_setting = roots_setting
        self.base_dir = os.path.abspath(os.fspath(base_dir))
        extra = [os.path.abspath(os.fspath(r)) for r in (image_roots or ())]
        self.roots: tuple[str, ...] = tuple(
            dict.fromkeys(os.path.realpath(r) for r in [self.base_dir, *extra])
        )
        self._root_set = RootSet(self.roots)
        self._extra_roots = bool(extra)
        self._real_dirs: dict[str, str] = {}

    def resolve(self, ref: str) -> str:
        """The URI as is, or the absolute normalised local path. Raises ImageRefError."""
        if not isinstance(ref, str):
            raise ImageRefError(f"image must be text: a path or a URI (got {ref!r})")
        if not ref.strip():
            raise ImageRefError(
                "image is empty; give a path (relative to the manifest's folder) or a URI"
            )
        scheme = uri_scheme(ref)
        if scheme is None:
            return self._check_local(ref, os.path.normpath(os.path.join(self.base_dir, ref)))
        if scheme in ("http", "https"):
            raise ImageRefError(
                f"image {ref!r} is an http(s) URL, which the pipeline cannot read; download "
                "it first, or store it where pyarrow.fs can read it "
                f"({', '.join(sorted(SUPPORTED_SCHEMES - {'file'}))})"
            )
        if scheme not in SUPPORTED_SCHEMES:
            raise ImageRefError(
                f"image {ref!r} uses the URI scheme {scheme!r}, which pyarrow.fs cannot read; "
                f"use one of {', '.join(sorted(SUPPORTED_SCHEMES))}, or a local path"
            )
        if scheme == "file":
            parsed = urlparse(ref)
            if parsed.netloc not in ("", "localhost"):
                raise ImageRefError(
                    f"image {ref!r} names the host {parsed.netloc!r}; file:// URIs must be "
                    "local (file:///absolute/path)"
                )
            return self._check_local(ref, os.path.normpath(unquote(parsed.path)))
        return ref

    def _check_local(self, ref: str, path: str) -> str:
        real = self._realpath(path)
        if real in self._root_set:
            return path
        lexically_inside = path in self._root_set
        how = (
            f"is a symlink (or lies in a linked folder) that resolves to {real!r}"
            if lexically_inside
            else f"resolves to {path!r}"
        )
        raise ImageRefError(
            f"image {ref!r} {how}, outside {self._roots_text()}; move the image there, "
            f"or allow its folder explicitly with {self.roots_setting}"
        )

    def _realpath(self, path: str) -> str:
        # realpath() walks every component; rows share folders, so resolve each folder once
        # and only look at the file itself per row.
        folder, name = os.path.split(path)
        real_folder = self._real_dirs.get(folder)
        if real_folder is None:
            real_folder = self._real_dirs[folder] = os.path.realpath(folder)
        candidate = os.path.join(real_folder, name)
        return os.path.realpath(candidate) if os.path.islink(candidate) else candidate

    def _roots_text(self) -> str:
        if not self._extra_roots:
            return f"the manifest's folder {self.roots[0]!r}"
        shown = ", ".join(repr(r) for r in self.roots[:_ROOTS_SHOWN])
        more = len(self.roots) - _ROOTS_SHOWN
        # Every refused row carries this text: name a catalog's thousands of folders by count.
        return f"the allowed roots {shown}" + (f" and {more} more" if more > 0 else "")
