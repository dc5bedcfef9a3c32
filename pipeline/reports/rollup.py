"""Roll several runs of one job up into one set of totals (for job history and finance)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .pricing import Pricing
from .report_doc import analyse_run
from .usage import CPU_PHASES, MODEL_PHASES

ROW_KEYS = ("total", "done", "cache_hits", "failed", "retried", "unfinished", "delivered")
ATTEMPT_KEYS = ("total", "ok", "cache_hit", "retry_scheduled", "failed_permanent")
TIME_KEYS = ("held_seconds", "load_seconds", "busy_seconds", "idle_seconds", "cpu_seconds")
DEVICE_KEYS = ("actors", "held_seconds", "load_seconds", "busy_seconds", "idle_seconds", "device_hours", "cost")


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 9)


def rollup(run_dirs: Iterable[str | Path], pricing: Pricing | None = None) -> dict[str, Any]:
    """Sum the ledger-derived figures of `run_dirs` (each priced by its own config unless
    `pricing` is given). Ratios are recomputed from the sums, not averaged:
    utilisation = device-busy / held, cost per generated image = total cost / images generated,
    cost per delivered image = total cost / (generated + cache hits), hosted API equivalent = the
    runs' own (images generated x price, summed), and cache saved = all cache hits x the job-wide
    marginal cost per generated image (the runs' device-busy cost of ok attempts / images
    generated: load, idle and failed attempts are paid whether or not a row hits the cache)."""
    runs = []
    rows = dict.fromkeys(ROW_KEYS, 0)
    attempts = dict.fromkeys(ATTEMPT_KEYS, 0)
    time = dict.fromkeys(TIME_KEYS, 0.0)
    busy_by_phase = dict.fromkeys(MODEL_PHASES, 0.0)
    cpu_by_phase = dict.fromkeys(CPU_PHASES, 0.0)
    devices: dict[str, dict[str, float]] = {}
    hosted: dict[str, float] = {}
    total_cost = failed_cost = device_hours = generated_busy_cost = 0.0
    currency = None
    for run_dir in run_dirs:
        f = analyse_run(run_dir, pricing).figures
        cost = f["cost"]
        if currency is not None and cost["currency"] != currency:
            raise ValueError(f"run {run_dir} is priced in {cost['currency']}, earlier runs in {currency}; "
                             "roll up runs priced in one currency (pass one pricing file)")
        currency = cost["currency"]
        for key in ROW_KEYS:
            rows[key] += f["rows"][key]
        for key in ATTEMPT_KEYS:
            attempts[key] += f["attempts"][key]
        for key in TIME_KEYS:
            time[key] += f["time"][key] or 0.0
        for phase in MODEL_PHASES:
            busy_by_phase[phase] += f["time"]["busy_by_phase"][phase] or 0.0
        for phase in CPU_PHASES:
            cpu_by_phase[phase] += f["time"]["cpu_by_phase"][phase] or 0.0
        for device_type, d in f["devices"].items():
            acc = devices.setdefault(device_type, dict.fromkeys(DEVICE_KEYS, 0.0))
            for key in DEVICE_KEYS:
                acc[key] += d[key] or 0.0
        for name, h in cost["hosted_api"].items():
            hosted[name] = hosted.get(name, 0.0) + h["cost"]
        total_cost += cost["total"]
        failed_cost += cost["failed_attempts"]
        generated_busy_cost += cost["generated_busy_cost"]
        device_hours += cost["device_hours"]
        runs.append({
            "run_dir": str(run_dir), "run_id": f["run"]["run_id"], "status": f["run"]["status"],
            "rows": f["rows"], "cost": cost["total"], "per_generated_image": cost["per_generated_image"],
            "per_delivered_image": cost["per_delivered_image"],
        })
    per_image = total_cost / rows["done"] if rows["done"] else None
    per_delivered = total_cost / rows["delivered"] if rows["delivered"] else None
    marginal = generated_busy_cost / rows["done"] if rows["done"] else None
    for d in devices.values():
        d["actors"] = int(d["actors"])
        d["utilisation"] = d["busy_seconds"] / d["held_seconds"] if d["held_seconds"] > 0 else None
        for key, value in d.items():
            if isinstance(value, float):
                d[key] = _r(value)
    return {
        "runs": runs,
        "rows": rows,
        "attempts": attempts,
        "time": {**{k: _r(v) for k, v in time.items()},
                 "utilisation": _r(time["busy_seconds"] / time["held_seconds"]) if time["held_seconds"] > 0 else None,
                 "busy_by_phase": {k: _r(v) for k, v in busy_by_phase.items()},
                 "cpu_by_phase": {k: _r(v) for k, v in cpu_by_phase.items()}},
        "devices": dict(sorted(devices.items())),
        "cost": {
            "currency": currency or "USD",
            "total": _r(total_cost),
            "device_hours": _r(device_hours),
            "failed_attempts": _r(failed_cost),
            "per_generated_image": _r(per_image),
            "per_delivered_image": _r(per_delivered),
            "hosted_api": {k: _r(v) for k, v in sorted(hosted.items())},
            "generated_busy_cost": _r(generated_busy_cost),
            "marginal_per_generated_image": _r(marginal),
            "cache_saved": _r(rows["cache_hits"] * marginal) if marginal is not None else None,
            "cache_saved_basis": "cache hits x the job's marginal cost per generated image over these "
            "runs (device-busy cost of ok attempts / images generated)"
            if marginal is not None else "no basis: these runs generated no images",
        },
    }
