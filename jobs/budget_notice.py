"""What a job's budget cannot promise, said before the run starts, and the budget's lines.

The cap is checked before each batch (jobs.budget): until a row has finished there is no
per-row estimate, so the first batch is dispatched whenever nothing is spent yet, and every
actor's model load is paid for before the cap can refuse anything. A cap below the cost of one
load is therefore always overshot; ``budget_load_warning`` says so (``job run`` and ``job
validate`` print it on stderr), naming the cap, what one load costs at the job's device price
and where that figure comes from (the job's earlier runs' ``actor-load`` records, else an
estimate it states), and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.retention import job_run_dirs
from jobs.spec import JobSpec
from pipeline.ledger import parse_line
from pipeline.reports.pricing import DEFAULT_PRICING_FILE, Pricing, PricingError, load_pricing
from pipeline.reports.report_render import money

# Load time assumed when no earlier run of the job recorded one: the shipped 64x64 model loads
# in a few seconds on a CPU (3-6 s measured); FLUX.1 Kontext [dev] reads ~24 GB of transformer
# and ~10 GB of text encoders from disk and moves them to the device.
ESTIMATED_LOAD_S = {"kontext-tiny": 10.0}
ESTIMATED_LOAD_S_OTHER = 120.0
# Loads are written near a ledger's start (and on actor restarts); a scan stops this many lines
# after the last one it found, so a million-row ledger is not read to its end.
_LINES_PAST_LAST_LOAD = 10_000


@dataclass(frozen=True)
class LoadCost:
    """The cost of one model load: ``seconds`` on ``device_type`` at ``price_per_hour``."""

    seconds: float
    device_type: str
    price_per_hour: float
    currency: str
    basis: str  # where the seconds (and the device type) come from, for the message

    @property
    def cost(self) -> float:
        return self.seconds * self.price_per_hour / 3600.0


def budget_load_warning(spec: JobSpec) -> str | None:
    """A warning when ``spec``'s budget cap is below the cost of one model load (None when it
    has no budget, the cap covers a load, or the pricing file cannot be read: validation
    names that problem itself)."""
    if spec.budget is None:
        return None
    try:
        pricing = load_pricing(spec.pricing or DEFAULT_PRICING_FILE)
    except PricingError:
        return None
    load = model_load_cost(spec, pricing)
    if load is None or spec.budget.amount >= load.cost:
        return None
    cap = money(spec.budget.amount, spec.budget.currency)
    need = money(load.cost, load.currency)
    return (
        f"warning: the budget cap {cap} (budget.amount in {spec.path}) is below the cost of one "
        f"model load, {need} ({load.seconds:.1f} s on {load.device_type} at "
        f"{money(load.price_per_hour, load.currency)}/h; {load.basis}). The cap is checked "
        "before each batch, and each actor's load is paid for before any row finishes, so the "
        f"run will spend more than its cap. Fix: raise budget.amount to at least {need} per "
        "actor, or remove the budget section if the job should always run."
    )


def model_load_cost(spec: JobSpec, pricing: Pricing) -> LoadCost | None:
    """One load's cost: the longest load recorded by the job's latest run that has any (at
    this pricing), else an estimate for the spec's model and device."""
    for _, run_dir in reversed(job_run_dirs(spec.runs_dir, spec.name)):
        loads = [r for r in recorded_loads(run_dir / "ledger.jsonl")
                 if r["device_type"] in pricing.device_hour]
        if loads:
            longest = max(loads, key=lambda r: r["end"] - r["start"])
            return LoadCost(longest["end"] - longest["start"], longest["device_type"],
                            pricing.price_per_hour(longest["device_type"]), pricing.currency,
                            f"the longest of {len(loads)} load(s) recorded in run {run_dir.name}")
    return _estimated_load(spec, pricing)


def recorded_loads(ledger: Path) -> list[Mapping[str, Any]]:
    """The ``actor-load`` records (with numeric start and end) of one ledger; [] without it."""
    loads: list[Mapping[str, Any]] = []
    since_last = 0
    try:
        f = open(ledger, "rb")
    except OSError:
        return loads
    with f:
        for line in f:
            since_last += 1
            if b'"actor-load"' in line and (rec := parse_line(line)) is not None \
                    and _is_load(rec):
                loads.append(rec)
                since_last = 0
            elif loads and since_last > _LINES_PAST_LAST_LOAD:
                break
    return loads


def _is_load(rec: Mapping[str, Any]) -> bool:
    return (rec.get("type") == "actor-load" and isinstance(rec.get("device_type"), str)
            and all(isinstance(rec.get(k), int | float) for k in ("start", "end"))
            and rec["end"] >= rec["start"])


def _estimated_load(spec: JobSpec, pricing: Pricing) -> LoadCost | None:
    device_type, why = _estimated_device_type(spec, pricing)
    if device_type is None:
        return None
    seconds = ESTIMATED_LOAD_S.get(spec.model, ESTIMATED_LOAD_S_OTHER)
    return LoadCost(seconds, device_type, pricing.price_per_hour(device_type), pricing.currency,
                    f"an estimate for model {spec.model} on {why}: no earlier run of job "
                    f"{spec.name} recorded a load")


def _estimated_device_type(spec: JobSpec, pricing: Pricing) -> tuple[str | None, str]:
    """The device type the run will most likely pay for; for a GPU of unknown kind, the
    dearest GPU in the pricing file (the warning must not miss an overshoot)."""
    gpus = {t: p for t, p in pricing.device_hour.items() if t != "CPU"}
    device = spec.ray.device
    if device == "auto" and spec.ray.address is None:
        from pipeline.cluster import local_has_cuda

        device = "cuda" if local_has_cuda() else "cpu"
    if device == "cpu":
        return ("CPU", "a CPU") if "CPU" in pricing.device_hour else (None, "")
    if not gpus:
        return None, ""
    dearest = max(gpus, key=lambda t: gpus[t])
    return dearest, f"a GPU of unknown kind, priced as the dearest in the pricing file ({dearest})"


def budget_stop_line(stop: Mapping[str, Any]) -> str:
    """The summary line of a run stopped at its cap (money as the report prints it)."""
    currency = stop.get("currency") or "USD"
    return (f"  budget:   stopped at the cap: spent {money(_number(stop.get('spent')), currency)} "
            f"of {money(_number(stop.get('cap')), currency)}; "
            f"{stop.get('rows_not_dispatched')} row(s) not run (reason 'budget cap reached'); "
            "exit code 3")


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None
