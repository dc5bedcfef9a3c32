"""The served review page: an HTML shell, its script and its style sheet.

The shell holds no row data: the script fetches rows a page at a time from the JSON API
(20,000 rows stay light) and builds every element with createElement/textContent, so text from
a manifest is never parsed as markup. Keys: j/k next/previous row, a approve, r reject (the
row's note goes with it), d redo, z or Enter zoom, Esc close the zoom.
"""

from __future__ import annotations

from html import escape
from urllib.parse import quote

FILTER_NAMES = (("product", "product"), ("variant", "variant"), ("flag", "flag"),
                ("decision", "decision"), ("status", "status"))


def page_html(run_id: str, token: str) -> str:
    t = escape(quote(token, safe=""), quote=True)
    selects = "".join(
        f'<label>{escape(label)} <select id="filter-{name}" data-filter="{name}">'
        '<option value="">all</option></select></label>' for name, label in FILTER_NAMES)
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>Review decisions: run {escape(run_id)}</title>\n"
        f'<link rel="stylesheet" href="/app.css?token={t}">\n'
        f'<script src="/app.js?token={t}" defer></script>\n</head>\n<body>\n'
        f'<header class="page"><h1>Review decisions: run {escape(run_id)}</h1>'
        '<div id="counts" class="counts" aria-live="polite"></div>\n'
        f'<nav class="filters" aria-label="filter rows">{selects}</nav>\n'
        '<div class="bulk" aria-label="decide every matching row">'
        '<span>Every matching row:</span>'
        '<button type="button" data-bulk="approve">Approve all matching</button>'
        '<button type="button" data-bulk="reject">Reject all matching</button>'
        '<button type="button" data-bulk="redo">Redo all matching</button>'
        '<input id="bulk-note" type="text" placeholder="note (optional)" maxlength="2000"></div>\n'
        '<div class="pager"><button type="button" id="prev">&larr; previous</button>'
        '<span id="showing">loading&hellip;</span>'
        '<button type="button" id="next">next &rarr;</button>'
        '<span id="message" role="status"></span></div>\n'
        '<p class="keys">Keys: j/k next/previous, a approve, r reject, d redo, z zoom, Esc close.</p>'
        "</header>\n<main><div id=\"tiles\" class=\"tiles\"></div></main>\n"
        '<div id="lightbox" hidden><img id="lightbox-img" alt="zoomed image"></div>\n'
        "</body></html>\n")


APP_JS = r"""// Review decisions page: rows from the JSON API, a page at a time; decisions POSTed back.
(function () {
  "use strict";
  var token = new URLSearchParams(window.location.search).get("token") || "";
  var PAGE = 50;
  var FILTERS = ["product", "variant", "flag", "decision", "status"];
  var state = {offset: 0, total: 0, rows: [], focus: -1, filters: {}};

  function byId(id) { return document.getElementById(id); }

  function api(path, body) {
    var options = {headers: {"X-Review-Token": token}};
    if (body !== undefined) {
      options.method = "POST";
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return fetch(path, options).then(function (response) {
      return response.json().then(function (data) {
        if (!response.ok) { throw new Error(data.error || response.statusText); }
        return data;
      });
    });
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) { node.setAttribute(name, attrs[name]); });
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function say(text, isError) {
    var box = byId("message");
    box.textContent = text;
    box.className = isError ? "error" : "";
  }

  function imageUrl(kind, row) {
    return "/img/" + kind + "/" + row.i + "?token=" + encodeURIComponent(token);
  }

  function decisionOf(row) {
    return row.decision ? row.decision.decision : (row.reviewable ? "none" : "n/a");
  }

  function figure(kind, row, caption) {
    var fig = el("figure");
    if (kind === "out" && !row.reviewable) {
      fig.appendChild(el("div", {"class": "placeholder", role: "img", "aria-label": row.status.toUpperCase()},
                         row.status.toUpperCase()));
    } else if (kind === "src" && !row.source) {
      fig.appendChild(el("div", {"class": "placeholder", role: "img", "aria-label": "no source"}, "no source"));
    } else {
      var image = el("img", {src: imageUrl(kind, row), alt: caption + " of row " + row.row_id, loading: "lazy"});
      image.addEventListener("click", function () { zoom(image.src); });
      fig.appendChild(image);
    }
    fig.appendChild(el("figcaption", {}, caption));
    return fig;
  }

  function tile(row, n) {
    var decision = decisionOf(row);
    var article = el("article", {"class": "tile status-" + row.status + " decision-" + decision,
                                 "data-row-id": row.row_id, "data-status": row.status,
                                 "data-decision": decision, "data-n": String(n), tabindex: "-1"});
    var head = el("div", {"class": "head"});
    head.appendChild(el("span", {"class": "rowid"}, "row " + row.row_id));
    head.appendChild(el("span", {"class": "status"}, row.status + (row.carried ? " (carried)" : "") +
        (row.redo_of ? " · redo of " + row.redo_of : "")));
    var badge = row.decision ? row.decision.decision + " by " + row.decision.reviewer +
        (row.decision.note ? ": " + row.decision.note : "") : (row.reviewable ? "waiting for review" : "");
    head.appendChild(el("span", {"class": "badge"}, badge));
    article.appendChild(head);
    var images = el("div", {"class": "imgs"});
    images.appendChild(figure("src", row, "before"));
    images.appendChild(figure("out", row, "after"));
    article.appendChild(images);
    article.appendChild(el("p", {"class": "instruction"}, row.instruction));
    var meta = [row.product_id ? "product " + row.product_id : "", row.variant ? "variant " + row.variant : "",
                row.seed !== null ? "seed " + row.seed : "",
                row.cost !== null && row.cost !== undefined ? "cost " + row.cost.toFixed(4) : ""].filter(Boolean).join(" · ");
    article.appendChild(el("p", {"class": "meta"}, meta));
    var marks = row.flags.slice();
    if (row.truncated) { marks.push("T5 cut"); }
    if (marks.length) {
      var flags = el("ul", {"class": "flags"});
      marks.forEach(function (f) { flags.appendChild(el("li", {"class": "flag"}, f)); });
      article.appendChild(flags);
    }
    if (row.notes) { article.appendChild(el("p", {"class": "input-notes"}, "input: " + row.notes)); }
    if (row.reviewable) {
      var actions = el("div", {"class": "actions"});
      var note = el("input", {type: "text", "class": "note", placeholder: "note (optional)", maxlength: "2000"});
      ["approve", "reject", "redo"].forEach(function (act) {
        var button = el("button", {type: "button", "data-act": act, "aria-pressed": String(decision === act)}, act);
        button.addEventListener("click", function () { decide([row.row_id], act, note.value); });
        actions.appendChild(button);
      });
      actions.appendChild(note);
      article.appendChild(actions);
    } else if (row.reason) {
      article.appendChild(el("p", {"class": "reason"}, row.reason));
    }
    article.addEventListener("click", function () { focus(n, false); });
    return article;
  }

  function render(data) {
    state.total = data.total;
    state.rows = data.rows;
    var tiles = byId("tiles");
    tiles.textContent = "";
    data.rows.forEach(function (row, n) { tiles.appendChild(tile(row, n)); });
    var first = data.total ? state.offset + 1 : 0;
    byId("showing").textContent = "showing " + first + "-" + (state.offset + data.rows.length) +
        " of " + data.total + " rows";
    byId("prev").disabled = state.offset === 0;
    byId("next").disabled = state.offset + PAGE >= data.total;
    if (state.focus >= data.rows.length) { state.focus = data.rows.length - 1; }
    if (state.focus >= 0) { focus(state.focus, false); }
    document.body.setAttribute("data-loaded", String(Date.now()));
  }

  function query() {
    var params = new URLSearchParams({offset: String(state.offset), limit: String(PAGE)});
    Object.keys(state.filters).forEach(function (k) { params.set(k, state.filters[k]); });
    return api("/api/rows?" + params.toString()).then(render).catch(function (e) { say(e.message, true); });
  }

  function fillSelect(name, values) {
    var select = byId("filter-" + name);
    var keep = select.value;
    while (select.options.length > 1) { select.remove(1); }
    values.forEach(function (v) { select.appendChild(el("option", {value: v}, v)); });
    select.value = values.indexOf(keep) >= 0 ? keep : "";
  }

  function loadMeta() {
    return api("/api/meta").then(function (meta) {
      fillSelect("product", meta.products);
      fillSelect("variant", meta.variants);
      fillSelect("flag", meta.flags);
      fillSelect("decision", ["none"].concat(meta.decisions));
      fillSelect("status", meta.statuses);
      byId("counts").textContent = Object.keys(meta.counts).sort().map(function (k) {
        return meta.counts[k] + " " + k;
      }).join(" · ") + Object.keys(meta.marks || {}).map(function (k) {
        return " · " + meta.marks[k] + " " + k;
      }).join("") + " · reviewer " + meta.reviewer;
    }).catch(function (e) { say(e.message, true); });
  }

  function refresh() { return Promise.all([loadMeta(), query()]); }

  function decide(rowIds, decision, note) {
    return api("/api/decisions", {decision: decision, note: note || "", rows: rowIds}).then(function (r) {
      say(r.recorded + " " + decision + " recorded", false);
      return refresh();
    }).catch(function (e) { say(e.message, true); });
  }

  function bulk(decision) {
    if (!Object.keys(state.filters).length) {
      say("choose a product, variant, flag, decision or status first: a bulk decision covers the filtered set", true);
      return;
    }
    api("/api/decisions", {decision: decision, note: byId("bulk-note").value, filter: state.filters}).then(function (r) {
      say(r.recorded + " " + decision + " recorded" + (r.skipped ? ", " + r.skipped + " without an output skipped" : ""), false);
      return refresh();
    }).catch(function (e) { say(e.message, true); });
  }

  function focus(n, scroll) {
    var tiles = document.querySelectorAll("article.tile");
    Array.prototype.forEach.call(tiles, function (t) { t.classList.remove("focused"); });
    if (n < 0 || n >= tiles.length) { return; }
    state.focus = n;
    tiles[n].classList.add("focused");
    if (scroll !== false) { tiles[n].scrollIntoView({block: "nearest"}); }
  }

  function move(step) {
    var n = state.focus + step;
    if (n >= state.rows.length && state.offset + PAGE < state.total) {
      state.offset += PAGE; state.focus = 0; query(); return;
    }
    if (n < 0 && state.offset > 0) {
      state.offset = Math.max(0, state.offset - PAGE); state.focus = PAGE - 1; query(); return;
    }
    focus(Math.max(0, Math.min(n, state.rows.length - 1)), true);
  }

  function zoom(src) {
    byId("lightbox-img").src = src;
    byId("lightbox").hidden = false;
  }

  function onKey(event) {
    var tag = (event.target.tagName || "").toLowerCase();
    if (event.key === "Escape") { byId("lightbox").hidden = true; return; }
    if (tag === "input" || tag === "select" || tag === "textarea" || event.ctrlKey || event.metaKey || event.altKey) { return; }
    var row = state.rows[state.focus];
    var tileNode = document.querySelectorAll("article.tile")[state.focus];
    if (event.key === "j") { move(1); } else if (event.key === "k") { move(-1); } else if (row && row.reviewable &&
        (event.key === "a" || event.key === "r" || event.key === "d")) {
      var act = {a: "approve", r: "reject", d: "redo"}[event.key];
      var note = tileNode ? tileNode.querySelector("input.note") : null;
      decide([row.row_id], act, note ? note.value : "");
    } else if ((event.key === "z" || event.key === "Enter") && tileNode) {
      var image = tileNode.querySelector(".imgs figure:last-child img");
      if (image) { zoom(image.src); }
    } else { return; }
    event.preventDefault();
  }

  FILTERS.forEach(function (name) {
    byId("filter-" + name).addEventListener("change", function (event) {
      if (event.target.value) { state.filters[name] = event.target.value; } else { delete state.filters[name]; }
      state.offset = 0; state.focus = -1;
      query();
    });
  });
  Array.prototype.forEach.call(document.querySelectorAll("button[data-bulk]"), function (b) {
    b.addEventListener("click", function () { bulk(b.getAttribute("data-bulk")); });
  });
  byId("prev").addEventListener("click", function () { state.offset = Math.max(0, state.offset - PAGE); query(); });
  byId("next").addEventListener("click", function () { state.offset += PAGE; query(); });
  byId("lightbox").addEventListener("click", function () { byId("lightbox").hidden = true; });
  document.addEventListener("keydown", onKey);
  refresh();
})();
"""

APP_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header.page{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:.5em 1.2em;z-index:1}
header.page h1{font-size:1.2em;margin:.1em 0}
.counts,.keys{color:#555;font-size:.9em;margin:.2em 0}
nav.filters label{margin-right:1em}
.bulk,.pager{margin:.3em 0;display:flex;gap:.5em;align-items:center;flex-wrap:wrap}
button{font:inherit;padding:.2em .7em;border:1px solid #999;border-radius:4px;background:#f3f3f3;cursor:pointer}
button[aria-pressed=true]{background:#234;color:#fff;border-color:#234}
#message.error{color:#b00}
main{padding:1em 1.2em}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:12px}
.tile{background:#fff;border:1px solid #ddd;border-top:5px solid #999;border-radius:4px;padding:8px}
.tile.focused{outline:3px solid #326ec8}
.tile.decision-approve{border-top-color:#2ea043}.tile.decision-reject{border-top-color:#c82828}
.tile.decision-redo{border-top-color:#eb8200}.tile.status-failed{background:#fdf2f2}
.tile .head{display:flex;justify-content:space-between;gap:.5em;font-size:.85em;color:#555}
.imgs{display:flex;gap:6px;margin:.4em 0}
.imgs figure{margin:0;width:170px;text-align:center;font-size:.75em;color:#666}
.imgs img{width:170px;height:170px;object-fit:contain;background:#eee;display:block;cursor:zoom-in}
.placeholder{width:170px;height:170px;display:flex;align-items:center;justify-content:center;background:#eee;border:2px dashed #999;font-weight:700}
.instruction{margin:.3em 0;white-space:pre-wrap;word-break:break-word}
.meta,.reason,.input-notes{margin:.2em 0;color:#444;font-size:.9em;word-break:break-word}
ul.flags{list-style:none;padding:0;margin:.3em 0;display:flex;gap:4px;flex-wrap:wrap}
li.flag{background:#fff0dc;color:#8a4a00;border:1px solid #eb8200;border-radius:3px;padding:0 6px;font-size:.8em}
.actions{display:flex;gap:.4em;flex-wrap:wrap}.actions input.note{flex:1;min-width:8em}
#lightbox{position:fixed;inset:0;background:rgba(0,0,0,.85);display:flex;align-items:center;justify-content:center;z-index:2;cursor:zoom-out}
#lightbox[hidden]{display:none}
#lightbox img{max-width:95vw;max-height:95vh;image-rendering:auto;background:#fff}
"""
