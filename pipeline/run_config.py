"""The run config: what a run is asked to do, what it derives from it, and its file.

- ``RunConfig``: every setting of one run. The CLI fills it from its flags
  (``RunConfig.from_args``), a job from its spec's sections (``RunConfig.from_sections``),
  a library caller by hand.
- ``derive_settings``: what the model and device add (dtype, row defaults, the cache key's
  model settings, the run identity the run id is hashed from), shared by the run and by its
  dry run so both plan the same keys and run ids.
- ``RUN_DIR/config.json``: written once per invocation (``write_config_file``), read back
  with ``read_config_file`` (reports, pricing, review, redo).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pipeline.cache import DEFAULT_APPROXIMATIONS, NATIVE_STORAGE, ModelSettings, numerics_version
from pipeline.cluster import default_dtype
from pipeline.encode import normalise_format
from pipeline.image_io import DEFAULT_MAX_PIXELS
from pipeline.loras import make_resolver
from pipeline.manifest_input import CLI_ROOTS_SETTING
from pipeline.model_info import MemoryPlanInfo, ModelInfo, check_plan_options, resolve_memory_plan
from pipeline.plan import RowDefaults

DEFAULT_MODEL = "kontext-tiny"
CONFIG_FILE = "config.json"


@dataclass
class RunConfig:
    """Everything a run needs; the CLI fills it from flags."""

    manifest: str
    out: str = "runs"
    store: str | None = None  # default OUT/store; any pyarrow filesystem URI works
    model: str = DEFAULT_MODEL
    address: str | None = None  # None: start a local Ray; "auto", "ray://host:10001", ...
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 4
    actors: int | None = None
    steps: int | None = None
    guidance: float | None = None
    output_format: str = "png"
    run_id: str | None = None
    max_attempts: int = 3
    retry_backoff_s: float = 1.0
    in_flight_per_actor: int = 2
    verify_cache: bool = False
    # hash every source again, ignoring the source-digest index (pipeline.digests: what it trusts)
    rehash_sources: bool = False
    num_cpus: int | None = None  # local Ray only
    reports: bool = True
    max_review_rows: int | None = None  # review page cap; None: the reports' default, 0: no limit
    progress: bool = True
    # Extra folders the manifest's local images may live in (besides the manifest's folder),
    # e.g. a catalog's image folder for a manifest built elsewhere (jobs).
    image_roots: list[str] | None = None
    # How the user gives image_roots, named in row reasons ("allow its folder explicitly with
    # --image-root"): the CLI's flag; a job spec says image_roots.
    image_roots_setting: str = CLI_ROOTS_SETTING
    # Pricing file (default pipeline/pricing.yaml) frozen into config.json, so the report prices
    # the run as its budget did, whatever later edits of the file.
    pricing: str | None = None
    # Sources with more pixels are refused (bad row) from their header, before decoding.
    max_pixels: int = DEFAULT_MAX_PIXELS
    step_cache: float | None = None  # fast path: first-block step caching threshold (part of the key)
    fp8: bool = False  # fast path: fp8 row-wise block linears, set at model load (part of the key)
    # exact path: fused RoPE + torch.compile per block in each actor (same pixels up to rounding,
    # so not in the key; compiled kernels are cached on disk and shared by the node's actors)
    compile: bool = False
    # memory plan (kontext_core.quant.plans): auto (the device's memory) or a size such as 24GB
    # picks one; memory_plan names one. Its weight storage (fp8) is in the key, offload is not.
    memory: str = "auto"
    memory_plan: str | None = None
    # LoRA adapters of every row as path[:scale] (--lora, job sampler.loras; a row's manifest
    # lora column replaces them for that row): their file hashes and scales are in the key
    loras: list[str] | None = None
    lora_mode: str = "unfused"  # unfused (a low-rank path beside each layer) | fused (W += BA)

    @classmethod
    def from_args(cls, args: argparse.Namespace, manifest: str) -> RunConfig:
        """From ``kontext-batch run``'s parsed flags: each flag whose dest is a field's name,
        plus the three whose sense or name differ (--image-root, --no-report, --quiet)."""
        given = vars(args)
        values = {f.name: given[f.name] for f in fields(cls) if f.name in given}
        values.update(manifest=manifest, image_roots=list(args.image_root) or None,
                      reports=not args.no_report, progress=not args.quiet)
        return cls(**values)

    @classmethod
    def from_sections(cls, *sections: Any, **values: Any) -> RunConfig:
        """From dataclass sections whose fields are named as this class's (a job spec's
        ``sampler`` and ``ray``: fields of other names are not the run's), then ``values``."""
        names = {f.name for f in fields(cls)}
        merged: dict[str, Any] = {}
        for section in sections:
            merged.update({k: v for k, v in asdict(section).items() if k in names})
        return cls(**{**merged, **values})


@dataclass(frozen=True)
class RunSettings:
    """What a run derives from its config, the model and the device."""

    device: str
    dtype: str
    defaults: RowDefaults  # steps, guidance and format of rows that leave them empty
    model: ModelSettings  # the model's part of every cache key
    identity: Mapping[str, Any]  # what the run id is hashed from (with the manifest digest)
    memory: MemoryPlanInfo | None = None  # the memory plan the actors load the model with

    def record(self, config: RunConfig, store_root: str) -> dict[str, Any]:
        """The resolved settings, as config.json and the ledger's run-start record hold them."""
        flags = {k: v for k, v in asdict(config).items() if k not in ("manifest", "out")}
        return {**flags, "device": self.device, "dtype": self.dtype,
                "steps": self.defaults.steps, "guidance": self.defaults.guidance,
                "output_format": self.defaults.output_format, "numerics": numerics_version(),
                "store": store_root,
                **({"memory_plan": self.memory.record()} if self.memory else {}),
                **({"lora": run_loras.to_wire()} if (run_loras := self._run_loras()) else {})}

    def _run_loras(self) -> Any:
        """The run's own adapter set as resolved (absolute paths, hashes), if any."""
        return self.defaults.loras.run if self.defaults.loras is not None else None


def derive_settings(config: RunConfig, info: ModelInfo, device: str) -> RunSettings:
    """Row defaults (flags, else the preset's), key settings and run identity of a run."""
    dtype = default_dtype(device) if config.dtype == "auto" else config.dtype
    fmt = normalise_format(config.output_format)
    step_cache = config.step_cache or None  # 0 means exact, the same as off
    memory = resolve_memory_plan(info.spec, device, dtype, config.memory, config.memory_plan)
    check_plan_options(memory, config.fp8, config.compile)
    # the run's adapters are read and checked here: a bad one stops the run before any work
    loras = make_resolver(info.spec, config.lora_mode, config.manifest, config.loras, config.fp8,
                          memory.storage, flag=_lora_setting(config))
    defaults = RowDefaults(
        steps=config.steps if config.steps is not None else info.default_steps,
        guidance=config.guidance if config.guidance is not None else info.default_guidance,
        output_format=fmt, loras=loras)
    model = ModelSettings(model_fingerprint=info.fingerprint, dtype=dtype,
                          approximations={**DEFAULT_APPROXIMATIONS, "step_cache": step_cache,
                                          "fp8": bool(config.fp8)},
                          storage=memory.storage)
    identity: dict[str, Any] = {"model": info.fingerprint, "dtype": dtype,
                                "steps": defaults.steps, "guidance": defaults.guidance,
                                "output_format": fmt, "numerics": numerics_version()}
    if step_cache:  # only when on, so exact runs keep their run ids
        identity["step_cache"] = step_cache
    if config.fp8:
        identity["fp8"] = True
    if memory.storage != NATIVE_STORAGE:  # the default plan's runs keep their run ids
        identity["storage"] = memory.storage
    if loras.run is not None:  # runs without --lora keep their run ids
        identity["lora"] = loras.run.key
    return RunSettings(device=device, dtype=dtype, defaults=defaults, model=model,
                       identity=identity, memory=memory)


def _lora_setting(config: RunConfig) -> str:
    """How the user named the run's adapters, for its error messages: a job's spec key or the flag."""
    return "sampler.loras" if config.image_roots_setting == "image_roots" else "--lora"


@dataclass(frozen=True)
class ConfigDocument:
    """RUN_DIR/config.json: the resolved config of a run (reports, pricing, review, redo)."""

    run_id: str
    manifest: str  # absolute path
    manifest_sha256: str
    rows_total: int
    model: str
    preset: str
    fingerprint: str
    settings: Mapping[str, Any]
    out: str
    store: str
    extra: Mapping[str, Any] = field(default_factory=dict)  # {"pricing": {...}} frozen prices

    def to_dict(self) -> dict[str, Any]:
        doc = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**doc, "settings": dict(self.settings), **self.extra}


def config_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / CONFIG_FILE


def write_config_file(run_dir: str | os.PathLike, doc: ConfigDocument) -> Path:
    """Write config.json atomically (temp + rename): a reader never sees half of it."""
    path = config_path(run_dir)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(doc.to_dict(), indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)
    return path


def read_config_file(run_dir: str | os.PathLike, strict: bool = False) -> dict[str, Any]:
    """config.json as a dict; {} when the run has none. A file that cannot be read as a JSON
    object gives {} too (a run folder from elsewhere: readers fall back to defaults), or with
    ``strict`` (the reports, which must not price or judge a run by defaults) a ValueError
    naming the file and the fix."""
    path = config_path(run_dir)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        if strict:
            raise ValueError(f"{path} cannot be read as JSON ({exc}); fix or remove it") from None
        return {}
    return doc if isinstance(doc, dict) else {}


__all__ = ["CONFIG_FILE", "DEFAULT_MODEL", "ConfigDocument", "RunConfig", "RunSettings",
           "config_path", "derive_settings", "read_config_file", "write_config_file"]
