"""Markdown and HTML renderings of a report object (see report_doc.py).

Both are built from the same list of sections so they cannot disagree. All text that came from a
ledger or manifest is escaped for the target format.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any

from .usage import CPU_PHASES, MODEL_PHASES


@dataclass
class Section:
    title: str
    pairs: list[tuple[str, str]] = field(default_factory=list)  # label, value
    header: list[str] = field(default_factory=list)  # table header (when rows)
    rows: list[list[str]] = field(default_factory=list)
    text: str = ""


def money(value: float | None, currency: str = "USD") -> str:
    """Cents for large sums, 4 decimals below 1, three significant digits below a cent."""
    if value is None:
        return "n/a"
    magnitude = abs(value)
    if magnitude >= 1:
        digits = 2
    elif magnitude >= 0.01 or magnitude == 0:
        digits = 4
    else:
        digits = min(9, 2 - math.floor(math.log10(magnitude)))
    sign = "-" if value < 0 else ""
    return f"{sign}${magnitude:,.{digits}f}" if currency == "USD" else f"{value:,.{digits}f} {currency}"


def seconds(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value >= 3600:
        return f"{value:,.1f} s ({value / 3600:.2f} h)"
    return f"{value:,.1f} s"


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f} %"


def idle_text(value: float | None) -> str:
    """Idle seconds; a negative value (an inconsistent ledger) is shown, and pointed at the notes."""
    if value is not None and value < -1e-6:
        return f"{value:,.1f} s (negative: ledger inconsistent, see Notes)"
    return seconds(value)


def _compare(hosted_minus_ours: float, currency: str) -> str:
    if hosted_minus_ours >= 0:
        return f"{money(hosted_minus_ours, currency)} cheaper"
    return f"{money(-hosted_minus_ours, currency)} dearer"


def _wall_label(starts: int) -> str:
    if starts > 1:
        return f"wall time (driver running, summed over its {starts} invocations)"
    return "wall time (driver running)"


def _amount(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def budget_text(budget: dict[str, Any], total: float | None, currency: str) -> str:
    """The budget-stop line: what had been spent when dispatch stopped, against the cap and the
    final total (batches in flight and the idle tail are paid after the stop)."""
    cur = budget.get("currency") or currency
    spent, cap = _amount(budget.get("spent")), _amount(budget.get("cap"))
    text = (f"spent when dispatch stopped {money(spent, cur)} of cap {money(cap, cur)}; "
            f"{budget.get('rows_not_dispatched')} rows not dispatched")
    if cap is not None and total is not None and cur == currency and total > cap:
        text += (f"; the final total {money(total, cur)} exceeds the cap by {money(total - cap, cur)} "
                 "(batches in flight and the idle tail finish after the stop)")
    return text


MAX_GROUP_ROWS = 50  # the costliest groups in md/html; report.json lists every one


def group_cost_section(title: str, key: str, groups: dict[str, Any], currency: str) -> Section:
    """A product or variant cost table, costliest first."""
    ranked = sorted(groups.items(), key=lambda kv: (-(kv[1]["direct"] or 0.0), kv[0]))
    shown = ranked[:MAX_GROUP_ROWS]
    more = len(ranked) - len(shown)
    text = f"the {MAX_GROUP_ROWS} costliest; {more} more in report.json (figures.cost.{key}). " if more else ""
    return Section(
        title, header=["name", "rows run", "generated", "failed", "direct cost", "share of total cost"],
        rows=[[name, str(g["rows"]), str(g["generated"]), str(g["failed"]), money(g["direct"], currency),
               money(g["share_of_total"], currency)] for name, g in shown],
        text=text + "direct: device-busy cost of the rows' attempts; share of total: the run's total "
                     "cost split in proportion (load and idle included). Cache hits cost nothing.")


def _bytes(value: Any) -> str:
    return "n/a (CPU)" if value is None else f"{value / 1024 ** 3:.2f} GiB" if value >= 1024 ** 3 // 10 \
        else f"{value / 1024 ** 2:.1f} MiB"


def memory_sections(memory: dict[str, Any] | None, text: dict[str, Any] | None, currency: str) -> list[Section]:
    """The memory plan with each actor's resident weights and peak, and the text phase."""
    out = []
    if memory:
        out.append(Section(
            "Memory", header=["actor", "plan", "resident weights", "peak device memory (largest batch)"],
            rows=[[name, str(a["plan"]), _bytes(a["resident_bytes"]), _bytes(a["peak_device_bytes"])]
                  for name, a in memory["actors"].items()],
            text=f"plan: {memory.get('describe') or memory.get('plan')}; estimated peak "
                 f"{_bytes(memory.get('estimated_peak_device_bytes'))}. Peak: torch.cuda.max_memory_allocated "
                 "per batch (none on CPU)."))
    if text:
        out.append(Section("Text phase", pairs=[
            ("instructions", f"{text['texts']} unique: {text['encoded']} encoded, {text['reused']} reused from the store"),
            ("encoder seconds", seconds(text["encode_seconds"])),
            ("text encoder actor held", seconds(text["held_seconds"])),
            ("cost", f"{money(text['cost'], currency)} (part of the total cost)"),
        ]))
    return out


def report_sections(report: dict[str, Any]) -> list[Section]:
    f = report["figures"]
    run, rows, time, cost, att = f["run"], f["rows"], f["time"], f["cost"], f["attempts"]
    cur = cost["currency"]
    prices = f["pricing"]
    sections = [
        Section("Run", pairs=[
            ("run id", str(run["run_id"])),
            ("status", str(run["status"])),
            ("model", f"{run['model']} (fingerprint {run['fingerprint']})"),
            ("manifest", str(run["manifest"])),
            (_wall_label(run["starts"]), seconds(run["wall_seconds"])),
            ("driver starts", str(run["starts"])),
        ]),
        Section("Rows", header=["total", "done", "cache hits", "failed", "retried", "unfinished"],
                rows=[[str(rows[k]) for k in ("total", "done", "cache_hits", "failed", "retried", "unfinished")]]),
    ]
    cost_pairs = [
        ("total cost", f"{money(cost['total'], cur)} for {cost['device_hours']:.4f} device-hours"),
        ("of which failed attempts",
         f"{money(cost['failed_attempts'], cur)} ({seconds(cost['failed_attempts_busy_seconds'])} device-busy in "
         f"{att['retry_scheduled'] + att['failed_permanent']} failed attempts)"),
    ]
    for cls, value in cost["failed_attempts_by_error_class"].items():
        cost_pairs.append((f"  failed: {cls}", money(value, cur)))
    cost_pairs.append(("cost per generated image",
                       f"{money(cost['per_generated_image'], cur)} ({rows['done']} images generated this run; "
                       "cache hits excluded)"))
    cost_pairs.append(("cost per delivered image",
                       f"{money(cost['per_delivered_image'], cur)} ({rows['delivered']} images delivered: "
                       f"{rows['done']} generated + {rows['cache_hits']} cache hits)"))
    for name, hosted in cost["hosted_api"].items():
        cost_pairs.append((f"hosted API equivalent ({name})",
                           f"{money(hosted['cost'], cur)} for the {hosted['images']} images generated this run "
                           f"at {money(hosted['price_per_image'], cur)} each (cache hits not counted on "
                           f"either side); ours is {_compare(hosted['difference'], cur)}"))
    cost_pairs.append(("cache saved", f"{money(cost['cache_saved'], cur)} ({rows['cache_hits']} cache hits; "
                                      f"{cost['cache_saved_basis']})"))
    if f.get("budget"):
        cost_pairs.append(("budget stop", budget_text(f["budget"], cost["total"], cur)))
    sections.append(Section("Cost", pairs=cost_pairs))
    for title, key in (("Cost per product", "by_product"), ("Cost per variant", "by_variant")):
        if cost.get(key):
            sections.append(group_cost_section(title, key, cost[key], cur))
    sections.append(Section(
        "Device time", header=["held", "model load", "device busy (model)", "idle", "utilisation"],
        rows=[[seconds(time["held_seconds"]), seconds(time["load_seconds"]), seconds(time["busy_seconds"]),
               idle_text(time["idle_seconds"]), percent(time["utilisation"])]]))
    sections.append(Section(
        "Device-busy seconds by model phase", header=list(MODEL_PHASES),
        rows=[[seconds(time["busy_by_phase"][p]) for p in MODEL_PHASES]]))
    sections.append(Section(
        "CPU work (overlapped with the model)", header=[*CPU_PHASES, "total"],
        rows=[[seconds(time["cpu_by_phase"][p]) for p in CPU_PHASES] + [seconds(time["cpu_seconds"])]],
        text="Run on CPU threads while the device works on the next batch: not part of device busy "
             "or idle, and not charged per row."))
    sections.append(Section(
        "Devices", header=["device type", "actors", "device-hours", "price per hour", "utilisation", "cost"],
        rows=[[dt, str(d["actors"]), f"{d['device_hours']:.4f}", money(d["price_per_hour"], cur),
               percent(d["utilisation"]), money(d["cost"], cur)] for dt, d in f["devices"].items()]))
    sections.append(Section(
        "Actors", header=["actor", "node", "device", "held", "load", "device busy", "idle", "CPU work",
                          "attempts", "held until", "cost"],
        rows=[[str(a["actor"]), str(a["node"]), f"{a['device_type']} {a['device'] or ''}".strip(),
               seconds(a["held_seconds"]), seconds(a["load_seconds"]), seconds(a["busy_seconds"]),
               idle_text(a["idle_seconds"]), seconds(a["cpu_seconds"]), str(a["attempts"]), a["end_source"],
               money(a["cost"], cur)]
              for a in f["actors"]]))
    sections += memory_sections(f.get("memory"), f.get("text_phase"), cur)
    sections.append(Section("Attempts", pairs=[
        ("total", str(att["total"])), ("ok", str(att["ok"])), ("cache hits", str(att["cache_hit"])),
        ("retry scheduled", str(att["retry_scheduled"])), ("failed permanently", str(att["failed_permanent"])),
        *[(f"error class {k}", str(v)) for k, v in att["by_error_class"].items()],
    ]))
    sections.append(Section("Prices", pairs=[
        ("device prices", f"{prices['source']} (as of {prices['as_of']})"),
        *[(f"  {dt} per device-hour", money(p, prices["currency"])) for dt, p in prices["device_hour"].items()],
        ("hosted API prices", f"{prices['hosted_api']['source']} (as of {prices['hosted_api']['as_of']})"),
        ("prices read from", str(report.get("inputs", {}).get("pricing_origin"))),
    ]))
    sections.append(Section("Cost model", text=report.get("cost_model", "")))
    if report.get("notes"):
        sections.append(Section("Notes", text="\n".join(f"- {n}" for n in report["notes"])))
    return sections


def _md_cell(text: str) -> str:
    """A table cell or list value: product ids and variants are user text, and Markdown viewers
    render inline HTML, so <, > and & become entities (which they show as the characters)."""
    text = html.escape(text, quote=False)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def report_markdown(report: dict[str, Any], generated_at: str | None = None) -> str:
    run_id = report["figures"]["run"]["run_id"]
    out = [f"# Cost and usage report: run {_md_cell(str(run_id))}", ""]
    for s in report_sections(report):
        out += [f"## {s.title}", ""]
        if s.pairs:
            out += [f"- **{_md_cell(k.strip())}**: {_md_cell(v)}" for k, v in s.pairs] + [""]
        if s.header:
            out.append("| " + " | ".join(_md_cell(h) for h in s.header) + " |")
            out.append("|" + "---|" * len(s.header))
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in s.rows] + [""]
        if s.text and s.title == "Cost model":
            out += ["```", s.text, "```", ""]
        elif s.text:
            out += [s.text, ""]
    if generated_at:
        out.append(f"_Generated {generated_at}; figures recomputed from ledger.jsonl "
                   f"(sha256 {report['inputs']['ledger_sha256'][:16]}…)._")
    return "\n".join(out) + "\n"


def report_html_fragment(report: dict[str, Any]) -> str:
    """The report as an HTML fragment (for report.html and the review page). Everything escaped."""
    esc = html.escape
    parts = ['<div class="report">']
    for s in report_sections(report):
        parts.append(f"<h2>{esc(s.title)}</h2>")
        if s.pairs:
            parts.append("<dl>" + "".join(f"<dt>{esc(k.strip())}</dt><dd>{esc(v)}</dd>" for k, v in s.pairs) + "</dl>")
        if s.header:
            parts.append("<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in s.header) + "</tr></thead><tbody>")
            parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in s.rows]
            parts.append("</tbody></table>")
        if s.text:
            parts.append(f"<pre>{esc(s.text)}</pre>")
    parts.append("</div>")
    return "\n".join(parts)


REPORT_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#222;max-width:70em}
table{border-collapse:collapse;margin:.5em 0 1em}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f3f3f3}dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dt{font-weight:600}
dd{margin:0}pre{background:#f7f7f7;padding:1em;white-space:pre-wrap}
"""


def report_html_page(report: dict[str, Any], generated_at: str | None = None) -> str:
    """report.html: standalone page, no scripts (CSP forbids them)."""
    run_id = html.escape(str(report["figures"]["run"]["run_id"]))
    footer = ""
    if generated_at:
        footer = (f"<p><em>Generated {html.escape(generated_at)}; figures recomputed from ledger.jsonl "
                  f"(sha256 {html.escape(report['inputs']['ledger_sha256'])}).</em></p>")
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n"
        f"<title>Cost and usage report: run {run_id}</title>\n<style>{REPORT_CSS}</style></head><body>\n"
        f"<h1>Cost and usage report: run {run_id}</h1>\n{report_html_fragment(report)}\n{footer}\n</body></html>\n"
    )
