"""Plan a run without running it: how many rows are cache hits, how many a model would
generate, and what that would cost.

``plan_only(config)`` does what ``run_batch`` does before its first model call (flags,
model fingerprint, manifest validation, a cache key per row, one listing of the store) and
stops there: no model is loaded, no Ray is started, no run folder is written and no ledger
line appended. (Joining ``config.address`` to count its GPUs, when the device is ``auto``, is
the one contact with a cluster; the store's source-digest index is used and updated when it
exists, as planning would, and is never created.)

The cost estimate is the cost per generated image of earlier runs (their reports' figures,
``pipeline.reports.rollup``) times the rows to generate; without earlier runs there is none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.cluster import resolve_device
from pipeline.digests import SourceDigests, default_index_path
from pipeline.errors import ConfigError
from pipeline.manifest_input import check_manifest
from pipeline.model_info import resolve_model_info
from pipeline.outcomes import Outcomes
from pipeline.plan import plan_run
from pipeline.reports.report_render import money
from pipeline.resume import base_run_id, choose_run
from pipeline.run_config import RunConfig, derive_settings
from pipeline.runner import check_flags
from pipeline.store import Store


@dataclass(frozen=True)
class CostBasis:
    """Cost per generated image, from ``runs`` earlier runs that generated ``images``."""

    per_image: float
    currency: str
    runs: int
    images: int


@dataclass(frozen=True)
class DryRun:
    run_id: str  # the run a real invocation would use (resume or new)
    resumes: bool  # an unfinished run of that id exists: a real run would resume it
    rows: int
    cache_hits: int
    done_before: int  # computed by an earlier invocation of the run being resumed
    failed: int  # rows that fail at planning (bad rows) or stay failed from that invocation
    deferred: int  # sources unreadable for now (transient): not run
    to_generate: int  # distinct cache keys a model would compute
    same_key: int  # further rows sharing one of those keys (done with it, no model call)
    basis: CostBasis | None = None

    @property
    def estimated_cost(self) -> float | None:
        return None if self.basis is None else self.basis.per_image * self.to_generate

    def lines(self) -> list[str]:
        """The plan for a terminal, one fact per line."""
        plan = (f"{self.rows} rows: {self.cache_hits} cache hits, {self.to_generate} to generate"
                + (f" (+{self.same_key} rows sharing their keys)" if self.same_key else "")
                + (f", {self.done_before} done earlier in this run" if self.done_before else "")
                + f", {self.failed} failed" + (f", {self.deferred} unreadable for now"
                                               if self.deferred else ""))
        out = [f"  plan:     {plan}",
               f"  run:      {self.run_id} ({'would resume' if self.resumes else 'new'})"]
        if self.basis is None:
            out.append("  estimate: none (no earlier run generated an image to price one by)")
        else:
            b = self.basis
            out.append(f"  estimate: ~{money(self.estimated_cost or 0.0, b.currency)} for "
                       f"{self.to_generate} image(s) at {money(b.per_image, b.currency)} "
                       f"per image ({b.images} image(s) generated in {b.runs} earlier run(s))")
        return out


class _NoLedger:
    """What planning appends to a ledger, dropped: a dry run leaves no record."""

    def record(self, type_: str, **fields: Any) -> dict[str, Any]:
        return {"type": type_, **fields}

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        pass


def cost_basis(run_dirs: Iterable[Path]) -> CostBasis | None:
    """Cost per generated image over the readable runs among ``run_dirs`` that generated
    any (each priced as its report prices it); None when there are none or their currencies
    differ."""
    from pipeline.reports import rollup

    usable = []
    for run_dir in run_dirs:
        if not (Path(run_dir) / "ledger.jsonl").exists():
            continue
        try:
            if rollup([run_dir])["rows"]["done"] > 0:
                usable.append(run_dir)
        except Exception:  # noqa: BLE001 - a damaged run only leaves the estimate out
            continue
    if not usable:
        return None
    try:
        totals = rollup(usable)
    except ValueError:  # runs priced in different currencies
        return None
    images = totals["rows"]["done"]
    return CostBasis(totals["cost"]["total"] / images, totals["cost"]["currency"],
                     len(usable), images)


def plan_only(config: RunConfig, basis_runs: Iterable[Path] = ()) -> DryRun:
    """The plan of ``config``'s run; ConfigError for the problems ``run_batch`` refuses
    before any work. ``basis_runs``: earlier run folders to price generated images by."""
    check_flags(config)
    info = resolve_model_info(config.model)
    checked = check_manifest(config.manifest, image_roots=config.image_roots,
                             roots_setting=config.image_roots_setting)
    derived = derive_settings(config, info, _device(config))
    out = Path(config.out).resolve()
    run_id, history = choose_run(out / "runs", base_run_id(checked.digest, derived.identity),
                                 config.run_id)
    store_root = config.store or str(out / "store")
    try:
        store = Store(store_root)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"the store {store_root!r} cannot be opened: {exc}") from None
    index = default_index_path(store_root)
    digests = SourceDigests(index if index.is_file() else None, rehash=config.rehash_sources)
    try:
        plan = plan_run(checked, run_id=run_id, model=derived.model, defaults=derived.defaults,
                        digests=digests, store=store, history=history,
                        ledger=_NoLedger(),  # type: ignore[arg-type]
                        outcomes=Outcomes(checked.rows_total))
    finally:
        digests.close()
    return DryRun(run_id=run_id, resumes=history.exists, rows=checked.rows_total,
                  cache_hits=plan.hits, done_before=plan.done_before, failed=plan.failed,
                  deferred=plan.deferred, to_generate=len(plan.all_tasks),
                  same_key=sum(len(f) for f in plan.followers.values()),
                  basis=cost_basis(basis_runs))


def _device(config: RunConfig) -> str:
    """The device the run would use, resolved as run_batch does (the dtype, and so every
    cache key, depends on it): a given cluster (or a Ray already up) is asked for its GPUs."""
    import ray

    from pipeline.cluster import cluster_resources, connect

    if config.address is None and not ray.is_initialized():
        return resolve_device(config.device, None)
    started = connect(config.address, config.num_cpus)  # joins; starts nothing
    try:
        return resolve_device(config.device, cluster_resources()[1])
    finally:
        if started:
            ray.shutdown()  # disconnects this driver from the cluster it joined


__all__ = ["CostBasis", "DryRun", "cost_basis", "plan_only"]
