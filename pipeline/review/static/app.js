// Review decisions page: rows from the JSON API, a page at a time; decisions POSTed back.
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
