"""Job specs: one YAML file per nightly job, checked with every mistake named by file and line.

    name: demo-nightly                 # letters, digits, '.', '_', '-'; run ids are <name>-<date>
    description: ...                   # optional
    manifest: catalog.parquet          # either a manifest ...
    build:                             # ... or how to build one each run (frozen per date)
      catalog: images/ | catalog.csv | catalog.parquet
      variants: variants.yaml
      seeds: 1                         # seeds per (product, variant)
    model: kontext-tiny                # a preset name or a folder of downloaded weights
    sampler: {steps: 8, guidance: 2.5, output_format: png, dtype: auto, batch_size: 4,
              step_cache: 0.2, fp8: false,  # opt-in fast path (approximate; in the cache key)
              compile: false,               # opt-in exact path: torch.compile in each actor
              memory: auto, memory_plan: null,  # memory plan (--memory / --memory-plan)
              loras: [loras/style.safetensors:0.8], lora_mode: unfused}  # LoRA (--lora, --lora-mode)
    output: runs/jobs                  # OUT: OUT/store (shared outputs), OUT/runs/<name>-<date>
    store: s3://bucket/prefix          # optional: outputs elsewhere (default OUT/store)
    image_roots: [s3://bucket/photos/] # optional: where images outside the manifest's folder may
                                       # be read from (folders or URI prefixes; a built manifest's
                                       # catalog folder is allowed without this)
    pricing: prices.yaml               # optional: default pipeline/pricing.yaml
    budget: {amount: 25, currency: USD}  # optional cap per run, in the pricing file's currency
    retention: {keep_runs: 14, keep_days: 30}  # optional; see jobs.retention
    schedule: {cron: "0 2 * * *", timezone: Europe/London}
    ray: {address: auto, actors: 2, device: auto, max_attempts: 3}

Relative paths resolve against the spec file's folder, so a job runs the same from any
working directory (cron, systemd). Validation reports every problem at once, each as
``FILE:LINE: KEY: what is wrong; what to do``.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import reprlib
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from jobs.cron import Cron, CronError, parse_cron
from manifests import limits
from manifests.limits import DEVICES, FORMAT_ALIASES, OUTPUT_FORMATS

CURRENCIES = ("USD", "EUR", "GBP")
DTYPES = ("auto", *limits.DTYPES)
MAX_KEEP_DAYS = 36500  # a century; larger reaches past the first representable date
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

_TOP_KEYS = ("name", "description", "manifest", "build", "model", "sampler", "output", "store",
             "image_roots", "pricing", "budget", "retention", "schedule", "ray")
_SECTIONS = {
    "build": ("catalog", "variants", "seeds"),
    "sampler": ("steps", "guidance", "output_format", "dtype", "batch_size", "step_cache", "fp8", "compile",
                "memory", "memory_plan", "loras", "lora_mode"),
    "budget": ("amount", "currency"),
    "retention": ("keep_runs", "keep_days"),
    "schedule": ("cron", "timezone"),
    "ray": ("address", "actors", "device", "max_attempts"),
}
# Keys where an explicit null is a documented choice rather than a forgotten value (a blank
# anywhere else would silently turn a feature off: no budget cap, no schedule, no retention).
_NULL_ALLOWED = frozenset({"ray.address"})  # null: a local Ray per run


@dataclass(frozen=True)
class SpecProblem:
    file: str
    line: int | None  # 1-based
    key: str  # dotted path, e.g. budget.amount ("" for the whole file)
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class SpecError(ValueError):
    """A job spec that cannot be used; ``.problems`` lists every mistake found."""

    def __init__(self, problems: list[SpecProblem], path: str | os.PathLike | None = None) -> None:
        self.problems = problems
        self.path = os.fspath(path) if path is not None else None
        n = len(problems)
        header = f"job spec {self.path} has {n} problem{'s' if n != 1 else ''}:" if path \
            else f"job spec has {n} problem{'s' if n != 1 else ''}:"
        super().__init__("\n".join([header, *(f"  {p}" for p in problems)]))


@dataclass(frozen=True)
class BuildRecipe:
    catalog: Path
    variants: Path
    seeds: int = 1


@dataclass(frozen=True)
class Sampler:
    steps: int | None = None
    guidance: float | None = None
    output_format: str = "png"
    dtype: str = "auto"
    batch_size: int = 4
    step_cache: float | None = None  # first-block step caching threshold (None: exact)
    fp8: bool = False  # fp8 row-wise block linears
    compile: bool = False  # exact path: fused RoPE + torch.compile per block in each actor
    memory: str = "auto"  # device memory to plan for: auto | 80GB | 24GB | 16GB | 12GB
    memory_plan: str | None = None  # a named memory plan (kontext_core.quant.plans.PLANS)
    loras: tuple[str, ...] | None = None  # LoRA adapters as absolute path:scale (every row's)
    lora_mode: str = "unfused"  # unfused | fused


@dataclass(frozen=True)
class Budget:
    amount: float
    currency: str


@dataclass(frozen=True)
class Retention:
    keep_runs: int | None = None
    keep_days: int | None = None

    @property
    def enabled(self) -> bool:
        return self.keep_runs is not None or self.keep_days is not None


@dataclass(frozen=True)
class Schedule:
    cron: Cron
    timezone: str

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)


@dataclass(frozen=True)
class RaySettings:
    address: str | None = None
    actors: int | None = None
    device: str = "auto"
    max_attempts: int = 3


@dataclass(frozen=True)
class JobSpec:
    path: Path  # the spec file (absolute)
    name: str
    model: str
    output: Path
    manifest: Path | None = None
    build: BuildRecipe | None = None
    description: str = ""
    sampler: Sampler = field(default_factory=Sampler)
    store: str | None = None
    image_roots: tuple[str, ...] = ()  # folders (resolved) or URI prefixes images may come from
    pricing: Path | None = None
    budget: Budget | None = None
    retention: Retention = field(default_factory=Retention)
    schedule: Schedule | None = None
    ray: RaySettings = field(default_factory=RaySettings)

    @property
    def runs_dir(self) -> Path:
        return self.output / "runs"

    def run_id(self, date: str) -> str:
        return f"{self.name}-{date}"

    def run_dir(self, date: str) -> Path:
        return self.runs_dir / self.run_id(date)


# ----------------------------------------------------------------------------- reading


class _Checker:
    """Collects problems while walking the composed YAML (nodes carry line numbers)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.base = path.parent
        self.problems: list[SpecProblem] = []
        # keys already reported (offered as "did you mean" for a misspelling, or given empty),
        # so they are not reported again as missing
        self.suggested: set[str] = set()
        self._constructor = yaml.constructor.SafeConstructor()

    def problem(self, node: yaml.Node | None, key: str, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else None
        self.problems.append(SpecProblem(str(self.path), line, key, message))

    def missing(self, node: yaml.Node | None, key: str, message: str) -> None:
        """A required key is absent, unless a misspelling of it was already reported."""
        if key not in self.suggested:
            self.problem(node, key, message)

    def value(self, node: yaml.Node) -> Any:
        return self._constructor.construct_document(node)

    def mapping(self, node: yaml.Node, key: str, allowed: tuple[str, ...]
                ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """key -> (key node, value node) of a mapping; unknown and repeated keys reported."""
        if not isinstance(node, yaml.MappingNode):
            what = "the file" if not key else key
            self.problem(node, key, f"{what} must be a mapping of keys to values, got "
                                    f"{_kind(self.value(node))}")
            return {}
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            name = self.value(key_node)
            full = f"{key}.{name}" if key else str(name)
            if not isinstance(name, str) or name not in allowed:
                close = difflib.get_close_matches(str(name), allowed, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else \
                    f"; known keys here: {', '.join(allowed)}"
                if close:
                    self.suggested.add(f"{key}.{close[0]}" if key else close[0])
                self.problem(key_node, full, f"unknown key {_short(name)}{hint}")
                continue
            if name in out:
                first = out[name][0].start_mark.line + 1
                self.problem(key_node, full, f"given twice (first on line {first}); keep one")
                continue
            value = self.value(value_node)
            if _is_empty(value) and not (value is None and full in _NULL_ALLOWED):
                # The key node carries the line: an empty value's mark is the next token's.
                self.problem(key_node, full, f"{full} is empty: give a value or remove the key")
                self.suggested.add(full)
                continue
            out[name] = (key_node, value_node)
        return out

    def path_value(self, entry: tuple[yaml.Node, yaml.Node] | None, key: str) -> Path | None:
        text = self.typed(entry, key, str, "a path")
        if text is None:
            return None
        if not text.strip():
            self.problem(_at(entry), key, "is empty; give a path (relative to the spec's folder)")
            return None
        return (self.base / Path(text).expanduser()).resolve()

    def typed(self, entry: tuple[yaml.Node, yaml.Node] | None, key: str, kind: type,
              what: str) -> Any:
        if entry is None:
            return None
        value = self.value(entry[1])
        if value is None:
            return None
        ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            ok, value = True, float(value)
        if not ok:
            self.problem(_at(entry), key, f"must be {what}, got {_kind(value)} {_short(value)}")
            return None
        return value

    def int_in(self, entry, key: str, low: int, high: int | None = None) -> int | None:
        value = self.typed(entry, key, int, "a whole number")
        if value is None:
            return None
        if value < low or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            self.problem(_at(entry), key, f"must be {bounds}, got {value}")
            return None
        return value

    def choice(self, entry, key: str, choices: tuple[str, ...], default: str,
               aliases: dict[str, str] | None = None) -> str:
        value = self.typed(entry, key, str, f"one of {', '.join(choices)}")
        if value is None:
            return default
        value = (aliases or {}).get(value, value)
        if value not in choices:
            close = difflib.get_close_matches(value, choices, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            self.problem(_at(entry), key, f"{_short(value)} is not one of {', '.join(choices)}{hint}")
            return default
        return value


def _at(entry: tuple[yaml.Node, yaml.Node]) -> yaml.Node:
    """The node to name a key's value by: the value, unless it is an alias (its node starts
    where the anchor was defined, before the key), then the key that uses it."""
    key_node, value_node = entry
    return key_node if value_node.start_mark.line < key_node.start_mark.line else value_node


def _is_empty(value: Any) -> bool:
    """Null, blank text, or an empty mapping/list: a key written but given nothing."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, dict | list) and not value


# A value quoted back in a message is cut short: an alias-nested list expands to millions of
# items (a "billion laughs" spec), and a message must stay one readable line.
_VALUE_REPR = reprlib.Repr()  # attributes, not keywords: Python 3.11 has no Repr(**limits)
_VALUE_REPR.maxlevel, _VALUE_REPR.maxlist, _VALUE_REPR.maxdict = 2, 4, 4
_VALUE_REPR.maxstring = _VALUE_REPR.maxother = 60
_VALUE_REPR_CHARS = 80


def _short(value: Any) -> str:
    """repr() of ``value``, at most 80 characters (nested containers abridged first)."""
    text = _VALUE_REPR.repr(value)
    return text if len(text) <= _VALUE_REPR_CHARS else text[:_VALUE_REPR_CHARS - 3] + "..."


def _kind(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "text", bool: "true/false",
             int: "a whole number", float: "a number", type(None): "nothing"}
    return names.get(type(value), type(value).__name__)


def load_job_spec(path: str | os.PathLike, *, check_files: bool = True,
                  check_model: bool = False) -> JobSpec:
    """Read and check a job spec. Raises SpecError listing every problem (file, line, key).

    ``check_files``: the manifest (or catalog and variants) must exist now (a run needs them;
    writing a schedule does not). ``check_model``: resolve the model (imports the model
    library, so only where a run is about to happen)."""
    spec_path = Path(path).expanduser().resolve()
    where = str(spec_path)
    try:
        text = spec_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([SpecProblem(where, None, "", "file not found; check the path")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([SpecProblem(where, None, "", f"cannot be read ({exc})")]) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        what = getattr(exc, "problem", None) or str(exc)
        raise SpecError([SpecProblem(where, line, "", f"not valid YAML: {what}; fix the syntax "
                                                      "there")], where) from None
    if root is None:
        raise SpecError([SpecProblem(where, 1, "", "the file is empty; see jobs/README.md for "
                                                   "the keys a job spec has")], where)
    tag_problems = _tag_problems(root, where)
    if tag_problems:  # nothing else can be read safely; and nothing tagged is ever run
        raise SpecError(tag_problems, where)
    checker = _Checker(spec_path)
    spec = _check(checker, root, check_files, check_model)
    if checker.problems:
        raise SpecError(sorted(checker.problems, key=lambda p: p.line or 0), where)
    assert spec is not None
    return spec


_SAFE_TAGS = frozenset(t for t in yaml.constructor.SafeConstructor.yaml_constructors if t)
# Handled while a mapping is read (``<<: *defaults``), not by a constructor of their own.
_MAPPING_TAGS = frozenset({"tag:yaml.org,2002:merge", "tag:yaml.org,2002:value"})


def _tag_text(tag: str) -> str:
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml.org,2002:") \
        else tag


def _tag_problems(root: yaml.Node, where: str) -> list[SpecProblem]:
    """Tags a job spec cannot hold, each with its line and key: unknown ones (``!!python/...``,
    ``!custom``: never constructed, so nothing runs) and values their tag cannot read
    (``!!int abc``), which PyYAML would raise as a bare traceback."""
    problems: list[SpecProblem] = []
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    while stack:
        node, key = stack.pop()
        if id(node) in seen:  # an alias: the same node again
            continue
        seen.add(id(node))
        line = node.start_mark.line + 1
        if node.tag not in _SAFE_TAGS and node.tag not in _MAPPING_TAGS:
            problems.append(SpecProblem(where, line, key, f"unknown YAML tag "
                                        f"{_short(_tag_text(node.tag))}; a job spec holds plain "
                                        "values (text, numbers, true/false, lists, mappings): "
                                        "remove the tag"))
        elif isinstance(node, yaml.ScalarNode) and node.tag in _SAFE_TAGS:
            try:
                yaml.constructor.SafeConstructor().construct_object(node)
            except Exception:  # noqa: BLE001 - each tag's constructor raises its own kind
                problems.append(SpecProblem(where, line, key, f"{_short(node.value)} cannot be "
                                            f"read as {_tag_text(node.tag)}; fix the value or "
                                            "remove the tag"))
        stack.extend(reversed(_children(node, key)))
    if not problems:  # a collection its tag cannot read (!!set on a list, a list as a key)
        try:
            yaml.constructor.SafeConstructor().construct_document(root)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problems.append(SpecProblem(where, mark.line + 1 if mark else None, "",
                                        f"cannot be read: {(exc.problem or str(exc))[:80]}; "
                                        "fix the value there"))
    return sorted(problems, key=lambda p: p.line or 0)


def _children(node: yaml.Node, key: str) -> list[tuple[yaml.Node, str]]:
    """(child node, its dotted key) of a collection node, in document order."""
    if isinstance(node, yaml.SequenceNode):
        return [(item, f"{key}[{i}]") for i, item in enumerate(node.value)]
    if isinstance(node, yaml.MappingNode):
        out = []
        for key_node, value_node in node.value:
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            full = f"{key}.{name}" if key else str(name)
            out += [(key_node, key), (value_node, _short(full)[1:-1])]
        return out
    return []


def _check(c: _Checker, root: yaml.Node, check_files: bool, check_model: bool
           ) -> JobSpec | None:
    top = c.mapping(root, "", _TOP_KEYS)
    if not isinstance(root, yaml.MappingNode):
        return None
    def required(key: str, example: str) -> tuple[yaml.Node, yaml.Node] | None:
        entry = top.get(key)
        if entry is None or c.value(entry[1]) is None:
            c.missing(entry[1] if entry else root, key, f"is missing; add e.g. {example}")
            return None
        return entry

    name = c.typed(required("name", "name: my-nightly-job"), "name", str, "text")
    if name is not None and not NAME_PATTERN.match(name):
        c.problem(top["name"][1], "name", f"{_short(name)} must start with a letter or digit and use "
                                          "only letters, digits, '.', '_' and '-' (it names "
                                          "run folders and systemd units)")
    description = c.typed(top.get("description"), "description", str, "text") or ""

    manifest, build = _check_source(c, top, root, check_files)
    model = _check_model(c, required("model", "model: kontext-tiny"), check_model)
    output = c.path_value(required("output", "output: runs/jobs"), "output")
    if output is not None and output.exists() and not output.is_dir():
        c.problem(top["output"][1], "output", f"{output} exists and is not a folder; pick "
                                              "another path")
    store = c.typed(top.get("store"), "store", str, "a folder or URI such as s3://bucket/prefix")
    if store is not None and "://" not in store:
        store = str((c.base / Path(store).expanduser()).resolve())
    image_roots = _check_image_roots(c, top.get("image_roots"), check_files)
    sampler = _check_sampler(c, top.get("sampler"), check_files)
    pricing_path = c.path_value(top.get("pricing"), "pricing")
    budget = _check_budget(c, top.get("budget"), pricing_path, top.get("pricing"))
    retention = _check_retention(c, top.get("retention"))
    schedule = _check_schedule(c, top.get("schedule"))
    ray = _check_ray(c, top.get("ray"))
    if c.problems or name is None or model is None or output is None:
        return None
    return JobSpec(path=c.path, name=name, model=model, output=output, manifest=manifest,
                   build=build, description=description, sampler=sampler, store=store,
                   image_roots=image_roots, pricing=pricing_path, budget=budget, retention=retention, schedule=schedule,
                   ray=ray)


def _check_image_roots(c: _Checker, entry: tuple[yaml.Node, yaml.Node] | None,
                      check_files: bool) -> tuple[str, ...]:
    """A list of folders (relative to the spec) or URI prefixes (s3://bucket/photos/)."""
    if entry is None or c.value(entry[1]) is None:
        return ()
    from manifests.paths import SUPPORTED_SCHEMES, uri_scheme

    items = c.value(entry[1])
    if not isinstance(items, list):
        items = [items] if isinstance(items, str) else None
    if items is None or not all(isinstance(i, str) and i.strip() for i in items):
        c.problem(entry[1], "image_roots", "must be a list of folders or URI prefixes, e.g. "
                                           "[s3://bucket/photos/, /data/catalog]")
        return ()
    roots = []
    for item in items:
        scheme = uri_scheme(item)
        if scheme is not None and scheme != "file":
            if scheme not in SUPPORTED_SCHEMES:
                c.problem(entry[1], "image_roots", f"{_short(item)}: remote roots must use a scheme pyarrow "
                                                   f"reads ({', '.join(sorted(SUPPORTED_SCHEMES - {'file'}))})")
                continue
            roots.append(item)
            continue
        folder = (c.base / Path(item.removeprefix("file://")).expanduser()).resolve()
        if check_files and not folder.is_dir():
            c.problem(entry[1], "image_roots", f"{folder} is not a folder; fix the path or remove it")
            continue
        roots.append(str(folder))
    return tuple(roots)


def _section(c: _Checker, entry: tuple[yaml.Node, yaml.Node] | None, key: str
             ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    if entry is None or c.value(entry[1]) is None:
        return {}
    return c.mapping(entry[1], key, _SECTIONS[key])


def _check_source(c: _Checker, top: dict, root: yaml.Node, check_files: bool
                  ) -> tuple[Path | None, BuildRecipe | None]:
    has_manifest, has_build = "manifest" in top, "build" in top
    if has_manifest and has_build:
        c.problem(top["build"][0], "build", "give either manifest: or build:, not both")
        return None, None
    if not has_manifest and not has_build:
        if "build" in c.suggested:  # given empty, and reported as such
            return None, None
        c.missing(root, "manifest", "is missing; add manifest: <file.parquet>, or build: "
                                    "{catalog: ..., variants: ...} to build one each run")
        return None, None
    if has_manifest:
        manifest = c.path_value(top["manifest"], "manifest")
        if manifest is not None and check_files and not manifest.is_file():
            c.problem(top["manifest"][1], "manifest",
                      f"file not found: {manifest} (relative paths resolve against "
                      f"{c.base}); fix the path, or use build: to make one from a catalog")
        return manifest, None
    section = _section(c, top["build"], "build")
    if not section:
        if isinstance(top["build"][1], yaml.MappingNode) or c.value(top["build"][1]) is None:
            c.problem(top["build"][1], "build", "needs catalog: and variants:")
        return None, None
    found: dict[str, Path | None] = {}
    for key, what in (("catalog", "a folder of images, a .csv or a .parquet catalog"),
                      ("variants", "a variants YAML file")):
        entry = section.get(key)
        if entry is None:
            c.missing(top["build"][0], f"build.{key}", f"is missing; give {what}")
            found[key] = None
            continue
        found[key] = c.path_value(entry, f"build.{key}")
        if found[key] is not None and check_files and not found[key].exists():
            c.problem(entry[1], f"build.{key}", f"not found: {found[key]} (relative paths "
                                                f"resolve against {c.base}); fix the path")
    seeds = c.int_in(section.get("seeds"), "build.seeds", 1, 1000)
    if found["catalog"] is None or found["variants"] is None:
        return None, None
    return None, BuildRecipe(found["catalog"], found["variants"], seeds or 1)


def _check_model(c: _Checker, entry, check_model: bool) -> str | None:
    model = c.typed(entry, "model", str, "a preset name or a weights folder")
    if model is None:
        return None
    looks_like_path = os.sep in model or model.startswith((".", "~")) or "/" in model
    if looks_like_path:
        folder = (c.base / Path(model).expanduser()).resolve()
        if not folder.is_dir():
            c.problem(entry[1], "model", f"weights folder not found: {folder} (relative paths "
                                         f"resolve against {c.base}); give a preset name or "
                                         "the folder of the weights you downloaded")
            return None
        model = str(folder)
    if check_model:
        from pipeline.errors import ConfigError
        from pipeline.model_info import resolve_model_info

        try:
            resolve_model_info(model)
        except ConfigError as exc:
            c.problem(entry[1], "model", str(exc).replace("--model", "model:"))
            return None
    return model


def _check_sampler(c: _Checker, entry, check_files: bool = True) -> Sampler:
    s = _section(c, entry, "sampler")
    guidance = c.typed(s.get("guidance"), "sampler.guidance", float, "a number")
    if guidance is not None and not (math.isfinite(guidance) and limits.guidance_in_range(guidance)):
        between = limits.range_text(limits.MIN_GUIDANCE, limits.MAX_GUIDANCE)
        c.problem(s["guidance"][1], "sampler.guidance", f"must be {between}, got {guidance}")
        guidance = None
    step_cache = c.typed(s.get("step_cache"), "sampler.step_cache", float, "a number")
    if step_cache is not None and not (math.isfinite(step_cache)
                                       and limits.step_cache_in_range(step_cache)):
        between = limits.range_text(limits.MIN_STEP_CACHE, limits.MAX_STEP_CACHE)
        c.problem(s["step_cache"][1], "sampler.step_cache", f"must be {between} (0.1-0.3 is "
                                                            f"typical), got {step_cache}")
        step_cache = None
    fp8 = c.typed(s.get("fp8"), "sampler.fp8", bool, "true or false")
    compile_ = c.typed(s.get("compile"), "sampler.compile", bool, "true or false")
    memory = c.typed(s.get("memory"), "sampler.memory", str, "auto or a size such as 24GB")
    memory_plan = c.typed(s.get("memory_plan"), "sampler.memory_plan", str, "a memory plan name")
    memory, memory_plan = _check_memory(c, s, memory, memory_plan)
    return Sampler(
        steps=c.int_in(s.get("steps"), "sampler.steps", limits.MIN_STEPS, limits.MAX_STEPS),
        guidance=guidance,
        output_format=c.choice(s.get("output_format"), "sampler.output_format",
                               OUTPUT_FORMATS, "png", aliases=dict(FORMAT_ALIASES)),
        dtype=c.choice(s.get("dtype"), "sampler.dtype", DTYPES, "auto"),
        batch_size=c.int_in(s.get("batch_size"), "sampler.batch_size", 1, 4096) or 4,
        step_cache=step_cache or None, fp8=bool(fp8), compile=bool(compile_),
        memory=memory or "auto", memory_plan=memory_plan, loras=_check_loras(c, s.get("loras"), check_files),
        lora_mode=c.choice(s.get("lora_mode"), "sampler.lora_mode", ("unfused", "fused"), "unfused"))


def _check_loras(c: _Checker, entry, check_files: bool) -> tuple[str, ...] | None:
    """sampler.loras: path[:scale] specs (a list, or one string); paths relative to the spec's
    folder; each file read and checked to be a LoRA now when files are checked (whether it fits
    the model is the run's check). Returns them as absolute path:scale."""
    if entry is None:
        return None
    from kontext_core.lora import LoraError, load_lora, parse_lora_spec

    value = c.value(entry[1])
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        c.problem(_at(entry), "sampler.loras", f"must be a list of path[:scale] strings, got "
                                               f"{_kind(value)} {_short(value)}")
        return None
    out = []
    for text in items:
        try:
            spec = parse_lora_spec(text)
            path = (c.base / Path(spec.path).expanduser()).resolve()
            if check_files:
                load_lora(path)
        except LoraError as exc:
            c.problem(_at(entry), "sampler.loras", f"{exc} (relative paths resolve against {c.base})")
            continue
        out.append(f"{path}:{spec.scale!r}")
    return tuple(out)


def _check_memory(c: _Checker, s, memory: str | None, plan: str | None) -> tuple[str | None, str | None]:
    """sampler.memory parses as a size and sampler.memory_plan names a plan (whether it fits is
    the run's check, against its device)."""
    from kontext_core.quant.plans import PLANS, PlanError, parse_memory

    if memory is not None:
        try:
            parse_memory(memory)
        except PlanError as exc:
            c.problem(s["memory"][1], "sampler.memory", str(exc))
            memory = None
    if plan is not None and plan not in PLANS:
        c.problem(s["memory_plan"][1], "sampler.memory_plan",
                  f"{plan!r} is not a memory plan; plans: {', '.join(PLANS)}")
        plan = None
    return memory, plan


def _pricing_currency(c: _Checker, pricing_path: Path | None, pricing_entry) -> str | None:
    """The pricing file's currency, or None after reporting why it cannot be read."""
    from pipeline.reports.pricing import PricingError, load_pricing

    try:
        return load_pricing(pricing_path).currency
    except PricingError as exc:
        node = pricing_entry[1] if pricing_entry else None
        c.problem(node, "pricing", f"{exc}")
        return None


def _check_budget(c: _Checker, entry, pricing_path: Path | None, pricing_entry
                  ) -> Budget | None:
    pricing_currency = None
    if pricing_entry is not None or entry is not None:
        pricing_currency = _pricing_currency(c, pricing_path, pricing_entry)
    if pricing_currency is not None and pricing_currency not in CURRENCIES:
        node = pricing_entry[1] if pricing_entry else None
        c.problem(node, "pricing", f"the pricing file's currency {pricing_currency!r} is not "
                                   f"supported; use one of {', '.join(CURRENCIES)}")
        pricing_currency = None  # reported once, not again as a budget mismatch
    s = _section(c, entry, "budget")
    if entry is None or not s:
        if entry is not None and c.value(entry[1]) is not None and \
                isinstance(entry[1], yaml.MappingNode):
            c.problem(entry[1], "budget", "needs amount: and currency:")
        return None
    amount = c.typed(s.get("amount"), "budget.amount", float, "a number")
    if "amount" not in s:
        c.missing(entry[0], "budget.amount", "is missing; add e.g. amount: 25")
    elif amount is not None and not (math.isfinite(amount) and amount >= 0):
        c.problem(s["amount"][1], "budget.amount", f"must be zero or more, got {amount}; a "
                                                   "budget is the most a run may spend")
        amount = None
    currency = c.typed(s.get("currency"), "budget.currency", str, "a currency code")
    if "currency" not in s:
        c.missing(entry[0], "budget.currency", f"is missing; add e.g. currency: "
                                               f"{pricing_currency or 'USD'}")
    elif currency is not None:
        code = currency.strip().upper()
        if code not in CURRENCIES:
            c.problem(s["currency"][1], "budget.currency",
                      f"unknown currency {_short(currency)}; use one of {', '.join(CURRENCIES)}")
            currency = None
        elif pricing_currency is not None and code != pricing_currency:
            c.problem(s["currency"][1], "budget.currency",
                      f"{code} differs from the pricing file's currency {pricing_currency} "
                      f"({pricing_path or 'pipeline/pricing.yaml'}); give the cap in "
                      f"{pricing_currency} or point pricing: at a {code} price list")
            currency = None
        else:
            currency = code
    if amount is None or currency is None:
        return None
    return Budget(amount, currency)


def _check_retention(c: _Checker, entry) -> Retention:
    s = _section(c, entry, "retention")
    return Retention(keep_runs=c.int_in(s.get("keep_runs"), "retention.keep_runs", 1),
                     keep_days=c.int_in(s.get("keep_days"), "retention.keep_days", 1,
                                        MAX_KEEP_DAYS))


def _check_schedule(c: _Checker, entry) -> Schedule | None:
    s = _section(c, entry, "schedule")
    if not s:
        return None
    cron = None
    text = c.typed(s.get("cron"), "schedule.cron", str, "a quoted cron expression")
    if "cron" not in s:
        c.missing(entry[0], "schedule.cron", "is missing; add e.g. cron: \"0 2 * * *\"")
    elif text is not None:
        try:
            cron = parse_cron(text)
        except CronError as exc:
            c.problem(s["cron"][1], "schedule.cron", str(exc))
    timezone = _check_timezone(c, s.get("timezone"), entry[0])
    if cron is None or timezone is None:
        return None
    return Schedule(cron, timezone)


def _check_timezone(c: _Checker, entry, section_node: yaml.Node) -> str | None:
    if entry is None:
        c.missing(section_node, "schedule.timezone", "is missing; add e.g. timezone: UTC or "
                                                     "timezone: Europe/London")
        return None
    name = c.typed(entry, "schedule.timezone", str, "an IANA timezone name")
    if name is None:
        return None
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        close = difflib.get_close_matches(name, sorted(zoneinfo.available_timezones()), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else " (e.g. UTC, Europe/London)"
        c.problem(entry[1], "schedule.timezone", f"unknown timezone {_short(name)}{hint}")
        return None
    return name


def _check_ray(c: _Checker, entry) -> RaySettings:
    s = _section(c, entry, "ray")
    address = c.typed(s.get("address"), "ray.address", str,
                      "text: auto, ray://HOST:10001 or HOST:6379")
    return RaySettings(
        address=address or None,
        actors=c.int_in(s.get("actors"), "ray.actors", 1),
        device=c.choice(s.get("device"), "ray.device", DEVICES, "auto"),
        max_attempts=c.int_in(s.get("max_attempts"), "ray.max_attempts", 1, 100) or 3)


# ----------------------------------------------------------------------------- finding


def find_job_spec(name_or_file: str, search_dirs: list[Path] | None = None) -> Path:
    """A spec file: the path itself when it exists (or ends in .yaml/.yml), else NAME.yaml /
    NAME.yml, or the spec whose ``name:`` is NAME, in the search folders (default: $KONTEXT_
    BATCH_JOBS_DIR, the current folder, ./jobs, ./jobs/examples, then the installed
    jobs/examples)."""
    candidate = Path(name_or_file).expanduser()
    if candidate.is_file() or candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise SpecError([SpecProblem(str(candidate.resolve()), None, "",
                                         "file not found; check the path")])
        return candidate.resolve()
    dirs = search_dirs if search_dirs is not None else default_search_dirs()
    for folder in dirs:
        for suffix in (".yaml", ".yml"):
            path = folder / f"{name_or_file}{suffix}"
            if path.is_file():
                return path.resolve()
    for folder in dirs:
        for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
            if _declared_name(path) == name_or_file:
                return path.resolve()
    looked = ", ".join(str(d) for d in dirs) or "(no folders)"
    raise SpecError([SpecProblem(name_or_file, None, "",
                                 f"no job named {name_or_file!r} in {looked}; pass the spec "
                                 "file's path, or set KONTEXT_BATCH_JOBS_DIR / --jobs-dir")])


def default_search_dirs() -> list[Path]:
    dirs: list[Path] = []
    env = os.environ.get("KONTEXT_BATCH_JOBS_DIR")
    if env:
        dirs.append(Path(env).expanduser())
    # "." first: run from the spec's own folder (cd jobs/examples), NAME is found there too
    dirs += [Path("."), Path("jobs"), Path("jobs") / "examples",
             Path(__file__).resolve().parent / "examples"]
    seen: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in seen:
            seen.append(d.resolve())
    return seen


def _declared_name(path: Path) -> str | None:
    """The ``name:`` a spec file declares, read from the composed nodes: nothing in the file
    is constructed (a tag that would fail, or an alias bomb, costs nothing here)."""
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(root, yaml.MappingNode):
        return None
    for key_node, value_node in root.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == "name" and \
                isinstance(value_node, yaml.ScalarNode) and value_node.tag == "tag:yaml.org,2002:str":
            return value_node.value
    return None
