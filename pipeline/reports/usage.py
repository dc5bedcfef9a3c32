"""Cost and usage figures of one run, computed from its ledger alone.

Cost model (printed in every report):

* The device is paid for while an actor holds it: from its ``actor-load`` start to its
  ``actor-stop`` end. An actor without ``actor-stop`` (it died, its driver was killed, or its
  stop timed out with batches in flight) is charged until the end of its last attempt (or its
  load end if it never ran one), so the total is then a lower bound and a note says so. A second
  ``actor-load`` for the same actor (a restart) closes the previous holding the same way.
  An attempt is billed to the holding of its actor that was held when it ran: one written after
  that holding closed (an ``ok`` recovered on resume for an output committed before its ledger
  line, or one ending before the holding's end) adds its device-busy seconds there, not a new
  holding.
* held = that interval; load = the ``actor-load`` interval; device-busy = the sum of the model
  phases of the actor's attempts (text encode, context encode, denoise, latent decode, and
  failed_model: the seconds of a model call that raised, e.g. out of memory, shared over its
  rows): the work that occupies the device. idle = held - load - device-busy; utilisation =
  device-busy / held. idle is never negative for a consistent ledger; when it is, the report
  shows it and a note.
* CPU work = the attempts' source read, source decode, file encode and commit seconds. They run
  on CPU threads overlapped with the model's work on the next batch, so they are reported on
  their own line and are not part of device-busy or idle.
* cost = device-hours x price[device type] (pricing file: source and date are printed).
* Failed attempts (``retry-scheduled`` and ``failed-permanent``; an attempt with an unknown
  outcome counts as ``failed-permanent``, with a note) cost their device-busy seconds x price;
  this share is already inside the total and is shown as its own line.
* wall time = the driver's running time summed over its invocations (a resumed run: each
  run-start to its run-end, or to its last record when that invocation was killed); the days
  between invocations are not counted. status is the last invocation's run-end status, or
  "unfinished" when the last run-start has no run-end after it.
* retried = rows with a ``retry-scheduled`` attempt followed by a later attempt that ran (a row
  refused again at each resume is not retried).
* cost per generated image = total cost / images generated this run (``ok`` rows; cache hits
  cost nothing and are not counted).
* cost per delivered image = total cost / (generated + cache hits): what each image this run
  handed over cost, the cache's reuse included.
* hosted API equivalent = images generated this run x reference price per image. Cache hits are
  left out on both sides: a hosted pipeline with its own cache would not pay for them either.
* cache saved = cache hits x this run's marginal cost per generated image: the device-busy cost
  of the ``ok`` attempts / images generated (an estimate from this run's own generated images;
  model load, idle time and failed attempts are left out: they are paid whether or not a row hits
  the cache; no figure when this run generated nothing).
* Per-row cost (contact sheets, review page, results.parquet's ``cost``) = device-busy seconds
  of the row's attempts x price; load, idle and CPU work are shared overhead and appear only in
  the run totals.
* Cost per product and per variant: ``direct`` = the per-row costs of its rows (failed attempts
  included); ``share_of_total`` = the run's total cost split in proportion to ``direct``, so the
  shares add up to the total (load and idle time spread over the work that needed them). Cache
  hits cost nothing and are not counted there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.ledger_cost import Holding, HoldingsFold
from pipeline.ledger_schema import (
    CPU_PHASES,  # noqa: F401  (phases run on CPU threads, overlapped with the model: never busy)
    FAILED_OUTCOMES,
    MODEL_PHASES,  # device-busy phases: model seconds (one definition, pipeline.ledger_schema)
    NOT_RUN,
    cpu_seconds,
    model_seconds,
)
from pipeline.ledger_schema import seconds_value as _num

from .ledger import Ledger, LedgerStream
from .pricing import Pricing, PricingError

COST_MODEL = __doc__.split("Cost model (printed in every report):", 1)[1].strip()


def _r(value: float | None) -> float | None:
    """Round for the report: stable text, still exact for sub-cent CPU costs (nano-units)."""
    return None if value is None else round(value, 9)


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


@dataclass(slots=True)
class RowSummary:
    """What the ledger says about one manifest row that ran (or failed) on an actor in this run.

    Rows whose every attempt was a cache hit get no RowSummary (a million of them on a nightly
    re-run): Analysis.hit_rows names them. Attempt records are not kept, only what the report
    and the review need from them."""

    row_id: str
    row_index: int | None = None
    status: str = NOT_RUN  # done, cache-hit, failed, not-run (retry scheduled, run stopped)
    busy_seconds: float = 0.0  # device-busy (model phases) over all attempts
    cost: float = 0.0
    output_uri: str | None = None
    error_class: str | None = None
    error: str | None = None
    worked_attempts: int = 0  # attempts that ran (every outcome but cache-hit)
    has_ok: bool = False
    has_cache_hit: bool = False
    had_retry: bool = False  # a retry-scheduled attempt was seen
    retried: bool = False  # ... and an attempt ran after it
    last_outcome: Any = None  # normalised: an unknown outcome counts as failed-permanent
    last: dict[str, Any] = field(default_factory=dict)  # the last attempt's manifest fields

    @property
    def attempts(self) -> int:
        """Attempts that ran, as the review shows them (cache hits are not attempts)."""
        return self.worked_attempts


# The manifest fields of an attempt record, kept from a row's last attempt (rows.py shows them
# for rows the ledger knows but results.parquet lacks).
MANIFEST_FIELDS = ("instruction", "seed", "product_id", "variant", "image", "key")


@dataclass
class Analysis:
    figures: dict[str, Any]
    rows: dict[str, RowSummary]  # rows that ran on an actor (or failed before one)
    warnings: list[str]
    hit_rows: set[str] = field(default_factory=set)  # rows whose every attempt was a cache hit
    ledger_sha256: str = ""
    ledger_records: int = 0

    def status_of(self, row_id: str) -> str | None:
        """done, cache-hit, failed or not-run; None when the ledger has no attempt of the row."""
        summary = self.rows.get(row_id)
        if summary is not None:
            return summary.status
        return "cache-hit" if row_id in self.hit_rows else None


def _row_status(row: RowSummary) -> str:
    if row.has_ok:
        return "done"
    if row.has_cache_hit:
        return "cache-hit"
    if row.last_outcome == "failed-permanent":
        return "failed"
    return NOT_RUN


def analyse(ledger: Ledger, pricing: Pricing) -> Analysis:
    """All figures of the report (the verified block) plus per-row summaries."""
    aggregate = _Aggregate(pricing)
    for rec in ledger.records:
        aggregate.add(rec)
    return aggregate.finish(ledger.warnings, ledger.sha256, len(ledger.records))


def analyse_stream(stream: LedgerStream, pricing: Pricing) -> Analysis:
    """`analyse` in one pass over a LedgerStream: no record is kept once it is counted."""
    aggregate = _Aggregate(pricing)
    for rec in stream:
        aggregate.add(rec)
    return aggregate.finish(stream.warnings, stream.sha256, stream.count)


class _Aggregate:
    """The report's sums, built one ledger record at a time."""

    def __init__(self, pricing: Pricing) -> None:
        self.pricing = pricing
        self.pricing_error: PricingError | None = None
        self.warnings: list[str] = []
        self.first_run_id: Any = None
        self.records = 0
        self.starts: list[dict[str, Any]] = []
        self.ends: list[dict[str, Any]] = []
        # One per run-start (driver invocation): [start ts, run-end ts or None, last record ts].
        self.invocations: list[list[Any]] = []
        self.budget_stops: list[dict[str, Any]] = []
        self.device = HoldingsFold(self.price)  # the cost fold the jobs budget meters with too
        self.device.warnings = self.warnings  # one list: notes stay in ledger order
        self.rows: dict[str, RowSummary] = {}
        self.hit_rows: set[str] = set()
        self.attempt_counts = {"total": 0, "ok": 0, "cache-hit": 0, "retry-scheduled": 0, "failed-permanent": 0}
        self.by_error_class: dict[str, int] = {}
        self.busy_by_phase = dict.fromkeys(MODEL_PHASES, 0.0)
        self.cpu_by_phase = dict.fromkeys(CPU_PHASES, 0.0)
        self.failed_busy = 0.0
        self.failed_cost = 0.0
        self.failed_by_class: dict[str, float] = {}
        self.ok_cost = 0.0  # device-busy cost of the ok attempts (the marginal cost of generating)
        self.text_phases: list[dict[str, Any]] = []  # pipeline.text_phase records
        self.memory: dict[str, dict[str, Any]] = {}  # actor -> plan, resident and peak bytes

    def price(self, device_type: str) -> float:
        """The price, or 0 with the first PricingError kept: it is raised once the whole ledger
        has been read, so a damaged ledger is still reported first (as when it was parsed whole)."""
        try:
            return self.pricing.price_per_hour(device_type)
        except PricingError as exc:
            self.pricing_error = self.pricing_error or exc
            return 0.0

    def add(self, rec: dict[str, Any]) -> None:
        if self.records == 0:
            self.first_run_id = rec.get("run_id")
        self.records += 1
        kind = rec["type"]
        if kind == "run-start":
            ts = _num(rec.get("ts"))
            self.invocations.append([ts, None, ts])
        elif self.invocations and self.invocations[-1][1] is None:
            invocation = self.invocations[-1]
            invocation[2] = max(invocation[2], _num(rec.get("ts")))
            if kind == "run-end":
                invocation[1] = _num(rec.get("ts"))
        if kind == "attempt":
            outcome = self._outcome(rec)  # its note comes before any the cost fold adds
            self._attempt(rec, outcome, self.device.add(rec))
        else:
            self.device.add(rec)
        if kind == "run-start":
            self.starts.append(rec)
        elif kind == "run-end":
            self.ends.append(rec)
        elif kind == "budget-stop":
            self.budget_stops.append(rec)
        elif kind == "text-phase":
            self.text_phases.append(rec)
        if kind in ("attempt", "actor-load") and isinstance(rec.get("memory"), dict):
            self._memory(str(rec.get("actor")), rec["memory"])

    def _memory(self, actor: str, memory: dict[str, Any]) -> None:
        """Per actor: its plan, the most weight bytes resident and the highest batch peak."""
        seen = self.memory.setdefault(actor, {"plan": None, "resident_bytes": None, "peak_device_bytes": None})
        seen["plan"] = memory.get("plan") or seen["plan"]
        for key in ("resident_bytes", "peak_device_bytes"):
            value = memory.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                seen[key] = value if seen[key] is None else max(seen[key], value)

    def _row(self, row_id: str) -> RowSummary:
        row = self.rows.get(row_id)
        if row is None:
            row = self.rows[row_id] = RowSummary(row_id=row_id)
            if row_id in self.hit_rows:  # a cache hit earlier, now a real attempt
                self.hit_rows.discard(row_id)
                row.has_cache_hit = True
        return row

    def _outcome(self, rec: dict[str, Any]) -> str:
        """The attempt's outcome; an unknown one counts as failed-permanent, with a note."""
        outcome = rec.get("outcome")
        if outcome in self.attempt_counts:
            return str(outcome)
        self.warnings.append(
            f"ledger line {rec['_line']}: unknown attempt outcome {outcome!r} (row "
            f"{rec.get('row_id')!r}); counted as failed-permanent, in the attempt counts and "
            "the row's status alike")
        return "failed-permanent"

    def _attempt(self, rec: dict[str, Any], outcome: str, holding: Holding | None) -> None:
        """One attempt's sums; ``holding``: the one the cost fold billed it to (None: no actor)."""
        self.attempt_counts["total"] += 1
        self.attempt_counts[outcome] += 1
        row_id = str(rec.get("row_id"))
        if outcome == "cache-hit":
            row = self.rows.get(row_id)
            if row is None:  # the usual hit: counted by id only, its record not even expanded
                self.hit_rows.add(row_id)
                return
            row.has_cache_hit = True
            row.last_outcome = outcome
            row.last = {k: rec.get(k) for k in MANIFEST_FIELDS}
            if rec.get("row_index") is not None:
                row.row_index = int(rec["row_index"])
            row.output_uri = row.output_uri or rec.get("output_uri")
            return
        row = self._row(row_id)
        row.worked_attempts += 1
        row.retried = row.retried or row.had_retry
        row.had_retry = row.had_retry or outcome == "retry-scheduled"
        row.last_outcome = outcome
        row.last = {k: rec.get(k) for k in MANIFEST_FIELDS}
        if rec.get("row_index") is not None:
            row.row_index = int(rec["row_index"])
        if rec.get("error_class"):
            self.by_error_class[str(rec["error_class"])] = self.by_error_class.get(str(rec["error_class"]), 0) + 1
        phases = rec.get("phases") or {}
        for phase in MODEL_PHASES:
            self.busy_by_phase[phase] += _num(phases.get(phase))
        for phase in CPU_PHASES:
            self.cpu_by_phase[phase] += _num(phases.get(phase))
        busy = model_seconds(phases)
        device_type = holding.device_type if holding else str(rec.get("device_type"))
        # A row refused before reaching any actor (bad manifest value, missing image)
        # used no device: nothing to price, whatever device types the pricing knows.
        no_device = holding is None and rec.get("device_type") is None
        price = 0.0 if no_device else self.price(device_type)
        if holding is not None:
            holding.busy += busy
            holding.cpu += cpu_seconds(phases)
            holding.attempts += 1
        attempt_cost = busy / 3600.0 * price
        row.busy_seconds += busy
        row.cost += attempt_cost
        if outcome == "ok":
            row.has_ok = True
            row.output_uri = rec.get("output_uri")
            self.ok_cost += attempt_cost
        if outcome in FAILED_OUTCOMES:
            self.failed_busy += busy
            self.failed_cost += attempt_cost
            cls = str(rec.get("error_class") or "unclassified")
            self.failed_by_class[cls] = self.failed_by_class.get(cls, 0.0) + attempt_cost
            row.error_class = rec.get("error_class")
            row.error = rec.get("error")

    def finish(self, ledger_warnings: list[str], sha256: str, records: int) -> Analysis:
        if self.pricing_error is not None:
            raise self.pricing_error
        return _figures(self, list(ledger_warnings) + self.warnings, sha256, records)


NO_GROUP = "(none)"  # rows without a product_id / variant


def cost_by_group(rows: Any, cost_total: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per product and per variant: rows that ran, images generated, rows failed, direct cost
    (their attempts' device-busy cost) and share of the total (the total split by direct cost)."""
    groups: tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]] = ({}, {})
    direct_total = 0.0
    for row in rows:
        direct_total += row.cost
        for field_name, table in zip(("product_id", "variant"), groups, strict=True):
            value = row.last.get(field_name)
            entry = table.setdefault(NO_GROUP if value in (None, "") else str(value),
                                     {"rows": 0, "generated": 0, "failed": 0, "direct": 0.0})
            entry["rows"] += 1
            entry["generated"] += row.status == "done"
            entry["failed"] += row.status == "failed"
            entry["direct"] += row.cost
    for table in groups:
        for entry in table.values():
            share = cost_total * entry["direct"] / direct_total if direct_total > 0 else None
            entry["direct"], entry["share_of_total"] = _r(entry["direct"]), _r(share)
    return tuple(dict(sorted(t.items())) for t in groups)  # type: ignore[return-value]


def _text_phase_figures(records: list[dict[str, Any]], pricing: Pricing) -> dict[str, Any] | None:
    """The text phase over the run's invocations: instructions encoded and reused, encoder
    seconds, and its actor's held time and cost (already in the run's total: the cost fold
    holds it like an editor's)."""
    if not records:
        return None
    held = cost = 0.0
    for rec in records:
        if rec.get("actor") is None:
            continue
        h = max(0.0, _num(rec.get("stop")) - _num(rec.get("load_start")))
        held += h
        cost += h / 3600.0 * pricing.price_per_hour(str(rec.get("device_type")))
    return {"texts": max(int(_num(r.get("texts"))) for r in records),
            "encoded": sum(int(_num(r.get("encoded"))) for r in records),
            "reused": sum(int(_num(r.get("reused"))) for r in records),
            "encode_seconds": _r(sum(_num(r.get("seconds")) for r in records)),
            "held_seconds": _r(held), "cost": _r(cost)}


def _memory_figures(actors: dict[str, dict[str, Any]], starts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The memory plan (config of the last invocation) and each actor's reported bytes."""
    settings = starts[-1].get("settings") if starts else None
    plan = settings.get("memory_plan") if isinstance(settings, dict) else None
    if not actors and not isinstance(plan, dict):
        return None
    plan = plan if isinstance(plan, dict) else {}
    peaks = [a["peak_device_bytes"] for a in actors.values() if a["peak_device_bytes"] is not None]
    return {"plan": plan.get("name"), "describe": plan.get("describe"),
            "estimated_peak_device_bytes": plan.get("estimated_peak_device_bytes"),
            "peak_device_bytes": max(peaks) if peaks else None,
            "actors": {name: dict(a) for name, a in sorted(actors.items())}}


def _figures(agg: _Aggregate, warnings: list[str], sha256: str, records: int) -> Analysis:
    pricing = agg.pricing
    starts, ends, budget_stops = agg.starts, agg.ends, agg.budget_stops
    holdings, rows = agg.device.holdings, agg.rows
    attempt_counts, by_error_class = agg.attempt_counts, agg.by_error_class
    busy_by_phase, cpu_by_phase = agg.busy_by_phase, agg.cpu_by_phase
    failed_busy, failed_cost, failed_by_class = agg.failed_busy, agg.failed_cost, agg.failed_by_class
    agg.device.close_open()
    unstopped = sum(1 for h in holdings if not h.stopped)
    if unstopped:
        warnings.append(
            f"cost is a lower bound: {unstopped} actor(s) have no actor-stop (held time ends at their "
            "last record): the driver was killed, an actor died or restarted, or its stop timed out "
            "with batches in flight")
    for row in rows.values():
        row.status = _row_status(row)
        if row.status in ("done", "cache-hit"):
            row.error_class, row.error = None, None

    # Rows and counts.
    statuses = [r.status for r in rows.values()]
    rows_total = starts[-1].get("rows_total") if starts else None
    if not isinstance(rows_total, int):
        rows_total = len(rows) + len(agg.hit_rows)
        warnings.append("no run-start with rows_total in the ledger; total = rows seen in attempts")
    done = statuses.count("done")
    cache_hits = statuses.count("cache-hit") + len(agg.hit_rows)
    failed = statuses.count("failed")
    retried = sum(1 for r in rows.values() if r.retried)
    unfinished = rows_total - done - cache_hits - failed
    if unfinished < 0:
        warnings.append(f"ledger has {len(rows) + len(agg.hit_rows)} rows but run-start says rows_total={rows_total}")

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
    marginal = agg.ok_cost / done if done else None
    delivered = done + cache_hits
    # Like for like: the hosted API would be paid for the images we generated, not for our hits.
    hosted = {
        name: {"price_per_image": price, "images": done, "cost": _r(done * price),
               "difference": _r(done * price - cost_total)}
        for name, price in sorted(pricing.hosted_per_image.items())
    }
    run_start = starts[0] if starts else {}
    # Each invocation's own running time: a run resumed the next day is not 24 h long.
    wall = sum((end if end is not None else last) - start for start, end, last in agg.invocations) \
        if agg.invocations else None
    last_invocation_ended = not agg.invocations or agg.invocations[-1][1] is not None
    status = ends[-1].get("status") if ends and last_invocation_ended else "unfinished"
    budget = None
    if budget_stops:
        b = budget_stops[-1]
        budget = {k: b.get(k) for k in ("spent", "cap", "currency", "rows_not_dispatched")}

    by_product, by_variant = cost_by_group(rows.values(), cost_total)
    figures = {
        "run": {
            "run_id": (run_start.get("run_id") if run_start else None) or agg.first_run_id,
            "manifest": run_start.get("manifest"),
            "model": run_start.get("model"),
            "fingerprint": run_start.get("fingerprint"),
            "starts": len(starts),
            "status": status,
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
            "generated_busy_cost": _r(agg.ok_cost),
            "marginal_per_generated_image": _r(marginal),
            "cache_saved": _r(cache_hits * marginal) if marginal is not None else None,
            "cache_saved_basis": "cache hits x this run's marginal cost per generated image (device-busy "
            "cost of its ok attempts / images generated; load, idle and failed attempts left out)"
            if marginal is not None else "no basis: this run generated no images",
            "by_product": by_product,
            "by_variant": by_variant,
        },
        "budget": budget,
        "pricing": {**pricing.to_dict(), "origin": pricing.origin},
        "text_phase": _text_phase_figures(agg.text_phases, pricing),
        "memory": _memory_figures(agg.memory, starts),
    }
    return Analysis(figures=figures, rows=rows, warnings=warnings, hit_rows=agg.hit_rows,
                    ledger_sha256=sha256, ledger_records=records)
