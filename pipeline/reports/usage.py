"""Cost and usage figures of one run, computed from its ledger alone.

Cost model (printed in every report):

* The device is paid for while an actor holds it: from its ``actor-load`` start to its
  ``actor-stop`` end. An actor that died without ``actor-stop`` is charged until the end of its
  last attempt (or its load end if it never ran one). A second ``actor-load`` for the same actor
  (a restart) closes the previous holding the same way.
* held = that interval; load = the ``actor-load`` interval; device-busy = the sum of the model
  phases of the actor's attempts (text encode, context encode, denoise, latent decode): the work
  that occupies the device. idle = held - load - device-busy; utilisation = device-busy / held.
  idle is never negative for a consistent ledger; when it is, the report shows it and a note.
* CPU work = the attempts' source read, source decode, file encode and commit seconds. They run
  on CPU threads overlapped with the model's work on the next batch, so they are reported on
  their own line and are not part of device-busy or idle.
* cost = device-hours x price[device type] (pricing file: source and date are printed).
* Failed attempts (``retry-scheduled`` and ``failed-permanent``) cost their device-busy seconds x
  price; this share is already inside the total and is shown as its own line.
* cost per generated image = total cost / images generated this run (``ok`` rows; cache hits
  cost nothing and are not counted).
* cost per delivered image = total cost / (generated + cache hits): what each image this run
  handed over cost, the cache's reuse included.
* hosted API equivalent = images generated this run x reference price per image. Cache hits are
  left out on both sides: a hosted pipeline with its own cache would not pay for them either.
* cache saved = cache hits x this run's cost per generated image (our own historical cost; no
  figure when this run generated nothing).
* Per-row cost (contact sheets, review page) = device-busy seconds of the row's attempts x price;
  load, idle and CPU work are shared overhead and appear only in the run totals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .ledger import Ledger
from .pricing import Pricing

# Phases that occupy the device (device-busy) and phases run on CPU threads, overlapped with the
# model's next batch (CPU work): the two are never added together.
MODEL_PHASES = ("text_encode", "context_encode", "denoise", "decode_latents")
CPU_PHASES = ("read", "decode", "file_encode", "commit")
FAILED_OUTCOMES = ("retry-scheduled", "failed-permanent")
COST_MODEL = __doc__.split("Cost model (printed in every report):", 1)[1].strip()


def _num(value: Any) -> float:
    """Numbers from the ledger; null/missing count as 0 (a cache hit has no phases)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value)


def _r(value: float | None) -> float | None:
    """Round for the report: stable text, still exact for sub-cent CPU costs (nano-units)."""
    return None if value is None else round(value, 9)


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def model_seconds(attempt: dict[str, Any]) -> float:
    """Device-busy seconds of one attempt: its model phases only."""
    phases = attempt.get("phases") or {}
    return sum(_num(phases.get(p)) for p in MODEL_PHASES)


def cpu_seconds(attempt: dict[str, Any]) -> float:
    """CPU-thread seconds of one attempt (read, decode, file encode, commit)."""
    phases = attempt.get("phases") or {}
    return sum(_num(phases.get(p)) for p in CPU_PHASES)


@dataclass
class Holding:
    """One actor's hold on one device, from model load to stop (or death)."""

    actor: str
    node: str | None
    device: str | None
    device_type: str
    start: float
    load_end: float
    end: float | None = None
    end_source: str = ""
    busy: float = 0.0  # device-busy: model phases
    cpu: float = 0.0  # CPU work, overlapped with the model
    attempts: int = 0
    last_attempt_end: float | None = None
    implicit: bool = False  # no actor-load record seen: charged from its first attempt

    def close_without_stop(self) -> None:
        candidates = [t for t in (self.last_attempt_end, self.load_end) if t is not None]
        self.end = max(candidates)
        self.end_source = "last-attempt" if self.last_attempt_end is not None and self.end == self.last_attempt_end else "load-end"


@dataclass
class RowSummary:
    """What the ledger says about one manifest row."""

    row_id: str
    row_index: int | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    status: str = "not-run"  # done, cache-hit, failed, pending (retry scheduled, run stopped)
    busy_seconds: float = 0.0  # device-busy (model phases) over all attempts
    cost: float = 0.0
    output_uri: str | None = None
    error_class: str | None = None
    error: str | None = None

    @property
    def last(self) -> dict[str, Any]:
        return self.attempts[-1]


@dataclass
class Analysis:
    figures: dict[str, Any]
    rows: dict[str, RowSummary]
    warnings: list[str]


def _row_status(attempts: list[dict[str, Any]]) -> str:
    outcomes = [a.get("outcome") for a in attempts]
    if "ok" in outcomes:
        return "done"
    if "cache-hit" in outcomes:
        return "cache-hit"
    if outcomes[-1] == "failed-permanent":
        return "failed"
    return "pending"


def analyse(ledger: Ledger, pricing: Pricing) -> Analysis:
    """All figures of the report (the verified block) plus per-row summaries."""
    warnings = list(ledger.warnings)
    starts = [r for r in ledger.records if r["type"] == "run-start"]
    ends = [r for r in ledger.records if r["type"] == "run-end"]
    budget_stops = [r for r in ledger.records if r["type"] == "budget-stop"]

    open_holdings: dict[str, Holding] = {}
    holdings: list[Holding] = []
    rows: dict[str, RowSummary] = {}
    attempt_counts = {"total": 0, "ok": 0, "cache-hit": 0, "retry-scheduled": 0, "failed-permanent": 0}
    by_error_class: dict[str, int] = {}
    busy_by_phase = dict.fromkeys(MODEL_PHASES, 0.0)
    cpu_by_phase = dict.fromkeys(CPU_PHASES, 0.0)
    failed_busy = 0.0
    failed_cost = 0.0
    failed_by_class: dict[str, float] = {}

    for rec in ledger.records:
        kind = rec["type"]
        actor = rec.get("actor")
        if kind == "actor-load":
            previous = open_holdings.pop(str(actor), None)
            if previous is not None:
                previous.close_without_stop()
            holding = Holding(
                actor=str(actor), node=rec.get("node"), device=rec.get("device"),
                device_type=str(rec.get("device_type")), start=_num(rec.get("start")),
                load_end=_num(rec.get("end")),
            )
            pricing.price_per_hour(holding.device_type)  # unknown device type: fail early, by name
            open_holdings[holding.actor] = holding
            holdings.append(holding)
        elif kind == "actor-stop":
            holding = open_holdings.pop(str(actor), None)
            if holding is None:
                warnings.append(f"ledger line {rec['_line']}: actor-stop for actor {actor!r} without an open actor-load; ignored")
                continue
            holding.end = _num(rec.get("end"))
            holding.end_source = "actor-stop"
        elif kind == "attempt":
            outcome = rec.get("outcome")
            if outcome not in attempt_counts:
                warnings.append(f"ledger line {rec['_line']}: unknown attempt outcome {outcome!r}; counted as failed")
                outcome = "failed-permanent"
            attempt_counts["total"] += 1
            attempt_counts[outcome] += 1
            row_id = str(rec.get("row_id"))
            row = rows.setdefault(row_id, RowSummary(row_id=row_id))
            row.attempts.append(rec)
            if rec.get("row_index") is not None:
                row.row_index = int(rec["row_index"])
            if outcome == "cache-hit":
                row.output_uri = row.output_uri or rec.get("output_uri")
                continue
            if rec.get("error_class"):
                by_error_class[str(rec["error_class"])] = by_error_class.get(str(rec["error_class"]), 0) + 1
            phases = rec.get("phases") or {}
            for phase in MODEL_PHASES:
                busy_by_phase[phase] += _num(phases.get(phase))
            for phase in CPU_PHASES:
                cpu_by_phase[phase] += _num(phases.get(phase))
            busy = model_seconds(rec)
            holding = open_holdings.get(str(actor)) if actor is not None else None
            if holding is None and actor is not None:
                holding = Holding(
                    actor=str(actor), node=rec.get("node"), device=rec.get("device"),
                    device_type=str(rec.get("device_type")), start=_num(rec.get("start")),
                    load_end=_num(rec.get("start")), implicit=True,
                )
                warnings.append(
                    f"ledger line {rec['_line']}: attempt by actor {actor!r} with no actor-load before "
                    "it; charged from this attempt's start with no load time"
                )
                pricing.price_per_hour(holding.device_type)
                open_holdings[holding.actor] = holding
                holdings.append(holding)
            device_type = holding.device_type if holding else str(rec.get("device_type"))
            # A row refused before reaching any actor (bad manifest value, missing image)
            # used no device: nothing to price, whatever device types the pricing knows.
            no_device = holding is None and rec.get("device_type") is None
            price = 0.0 if no_device else pricing.price_per_hour(device_type)
            if holding is not None:
                holding.busy += busy
                holding.cpu += cpu_seconds(rec)
                holding.attempts += 1
                end = _num(rec.get("end"))
                holding.last_attempt_end = end if holding.last_attempt_end is None else max(holding.last_attempt_end, end)
            attempt_cost = busy / 3600.0 * price
            row.busy_seconds += busy
            row.cost += attempt_cost
            if outcome == "ok":
                row.output_uri = rec.get("output_uri")
            if outcome in FAILED_OUTCOMES:
                failed_busy += busy
                failed_cost += attempt_cost
                cls = str(rec.get("error_class") or "unclassified")
                failed_by_class[cls] = failed_by_class.get(cls, 0.0) + attempt_cost
                row.error_class = rec.get("error_class")
                row.error = rec.get("error")

    for holding in open_holdings.values():
        holding.close_without_stop()
    for row in rows.values():
        row.status = _row_status(row.attempts)
        if row.status in ("done", "cache-hit"):
            row.error_class, row.error = None, None

    # Rows and counts.
    statuses = [r.status for r in rows.values()]
    rows_total = starts[-1].get("rows_total") if starts else None
    if not isinstance(rows_total, int):
        rows_total = len(rows)
        warnings.append("no run-start with rows_total in the ledger; total = rows seen in attempts")
    done = statuses.count("done")
    cache_hits = statuses.count("cache-hit")
    failed = statuses.count("failed")
    retried = sum(1 for r in rows.values() if sum(a.get("outcome") != "cache-hit" for a in r.attempts) > 1)
    unfinished = rows_total - done - cache_hits - failed
    if unfinished < 0:
        warnings.append(f"ledger has {len(rows)} rows but run-start says rows_total={rows_total}")

    # Device time and cost.
    held = load = busy_total = 0.0
    cost_total = 0.0
    devices: dict[str, dict[str, Any]] = {}
    actors_out = []
    for h in sorted(holdings, key=lambda h: (h.start, h.actor)):
        h_held = max(0.0, (h.end or h.start) - h.start)
        h_load = max(0.0, h.load_end - h.start)
        h_idle = h_held - h_load - h.busy
        if h_idle < -1e-6:
            warnings.append(
                f"actor {h.actor!r}: load + device-busy ({h_load + h.busy:.3f} s) exceeds held time "
                f"({h_held:.3f} s), so idle is negative ({h_idle:.3f} s): the ledger is inconsistent "
                "(model phases counted twice, overlapping batches on one device, or clocks that "
                "jumped); utilisation is overstated. Check this actor's attempt records"
            )
        price = pricing.price_per_hour(h.device_type)
        h_cost = h_held / 3600.0 * price
        held, load, busy_total, cost_total = held + h_held, load + h_load, busy_total + h.busy, cost_total + h_cost
        dev = devices.setdefault(h.device_type, {
            "actors": 0, "held_seconds": 0.0, "load_seconds": 0.0, "busy_seconds": 0.0,
            "price_per_hour": price, "cost": 0.0,
        })
        dev["actors"] += 1
        dev["held_seconds"] += h_held
        dev["load_seconds"] += h_load
        dev["busy_seconds"] += h.busy
        dev["cost"] += h_cost
        actors_out.append({
            "actor": h.actor, "node": h.node, "device": h.device, "device_type": h.device_type,
            "start": _r(h.start), "end": _r(h.end), "end_source": "implicit-" + h.end_source if h.implicit else h.end_source,
            "held_seconds": _r(h_held), "load_seconds": _r(h_load), "busy_seconds": _r(h.busy),
            "idle_seconds": _r(h_idle), "cpu_seconds": _r(h.cpu), "utilisation": _r(_ratio(h.busy, h_held)),
            "attempts": h.attempts, "cost": _r(h_cost),
        })
    for dev in devices.values():
        dev["idle_seconds"] = dev["held_seconds"] - dev["load_seconds"] - dev["busy_seconds"]
        dev["device_hours"] = dev["held_seconds"] / 3600.0
        dev["utilisation"] = _ratio(dev["busy_seconds"], dev["held_seconds"])
        for key, value in dev.items():
            if isinstance(value, float):
                dev[key] = _r(value)

    per_image = cost_total / done if done else None
    delivered = done + cache_hits
    # Like for like: the hosted API would be paid for the images we generated, not for our hits.
    hosted = {
        name: {"price_per_image": price, "images": done, "cost": _r(done * price),
               "difference": _r(done * price - cost_total)}
        for name, price in sorted(pricing.hosted_per_image.items())
    }
    run_start = starts[0] if starts else {}
    wall = (_num(ends[-1].get("ts")) - _num(run_start.get("ts"))) if ends and starts else None
    budget = None
    if budget_stops:
        b = budget_stops[-1]
        budget = {k: b.get(k) for k in ("spent", "cap", "currency", "rows_not_dispatched")}

    figures = {
        "run": {
            "run_id": (run_start.get("run_id") if run_start else None)
            or next((r.get("run_id") for r in ledger.records), None),
            "manifest": run_start.get("manifest"),
            "model": run_start.get("model"),
            "fingerprint": run_start.get("fingerprint"),
            "starts": len(starts),
            "status": ends[-1].get("status") if ends else "unfinished",
            "wall_seconds": _r(wall),
        },
        "rows": {
            "total": rows_total, "done": done, "cache_hits": cache_hits, "failed": failed,
            "retried": retried, "unfinished": unfinished, "delivered": delivered,
        },
        "attempts": {
            "total": attempt_counts["total"], "ok": attempt_counts["ok"],
            "cache_hit": attempt_counts["cache-hit"],
            "retry_scheduled": attempt_counts["retry-scheduled"],
            "failed_permanent": attempt_counts["failed-permanent"],
            "by_error_class": dict(sorted(by_error_class.items())),
        },
        "time": {
            "held_seconds": _r(held), "load_seconds": _r(load), "busy_seconds": _r(busy_total),
            "idle_seconds": _r(held - load - busy_total), "utilisation": _r(_ratio(busy_total, held)),
            "busy_by_phase": {k: _r(v) for k, v in busy_by_phase.items()},
            "cpu_seconds": _r(sum(cpu_by_phase.values())),
            "cpu_by_phase": {k: _r(v) for k, v in cpu_by_phase.items()},
        },
        "devices": dict(sorted(devices.items())),
        "actors": actors_out,
        "cost": {
            "currency": pricing.currency,
            "device_hours": _r(held / 3600.0),
            "total": _r(cost_total),
            "failed_attempts": _r(failed_cost),
            "failed_attempts_busy_seconds": _r(failed_busy),
            "failed_attempts_by_error_class": {k: _r(v) for k, v in sorted(failed_by_class.items())},
            "per_generated_image": _r(per_image),
            "per_delivered_image": _r(_ratio(cost_total, delivered)),
            "hosted_api": hosted,
            "cache_saved": _r(cache_hits * per_image) if per_image is not None else None,
            "cache_saved_basis": "cache hits x this run's cost per generated image"
            if per_image is not None else "no basis: this run generated no images",
        },
        "budget": budget,
        "pricing": {**pricing.to_dict(), "origin": pricing.origin},
    }
    return Analysis(figures=figures, rows=rows, warnings=warnings)
