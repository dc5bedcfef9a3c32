"""The review page's script and style sheet, written next to review.html.

They live in separate files because the page's Content-Security-Policy allows only scripts and
styles from files ('self'), never inline ones: text from a manifest can then never run as code.
"""

REVIEW_JS = r"""// Review page filter: all / failed / flagged. Reads rows from the JSON data block and the
// initial filter from the URL hash (#filter=failed), so a link or a test can open a filtered view.
(function () {
  "use strict";
  var FILTERS = ["all", "failed", "flagged"];
  var data = JSON.parse(document.getElementById("review-data").textContent);
  var byTile = {};
  data.rows.forEach(function (row) { byTile[String(row.tile)] = row; });
  var tiles = Array.prototype.slice.call(document.querySelectorAll("article.tile"));
  var buttons = Array.prototype.slice.call(document.querySelectorAll("button[data-filter]"));
  var counter = document.getElementById("showing");

  function matches(row, filter) {
    if (filter === "failed") { return row.failed; }
    if (filter === "flagged") { return row.flagged; }
    return true;
  }

  function apply(filter) {
    if (FILTERS.indexOf(filter) < 0) { filter = "all"; }
    var shown = 0;
    tiles.forEach(function (tile) {
      var row = byTile[tile.getAttribute("data-tile")];
      var visible = row !== undefined && matches(row, filter);
      tile.hidden = !visible;
      if (visible) { shown += 1; }
    });
    buttons.forEach(function (b) {
      b.setAttribute("aria-pressed", String(b.getAttribute("data-filter") === filter));
    });
    counter.textContent = "showing " + shown + " of " + tiles.length + " rows";
    document.body.setAttribute("data-filter", filter);
  }

  function fromHash() {
    var match = /(?:^#|&)filter=([a-z]+)/.exec(window.location.hash);
    return match ? match[1] : "all";
  }

  buttons.forEach(function (b) {
    b.addEventListener("click", function () {
      var filter = b.getAttribute("data-filter");
      if (window.location.hash !== "#filter=" + filter) {
        window.location.hash = "filter=" + filter;  // hashchange applies it
      } else {
        apply(filter);
      }
    });
  });
  window.addEventListener("hashchange", function () { apply(fromHash()); });
  apply(fromHash());
})();
"""

REVIEW_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header.page{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:.6em 1.2em;z-index:1}
header.page h1{font-size:1.25em;margin:.1em 0}
.summary span{margin-right:1.2em}
nav.filters button{font:inherit;padding:.25em .8em;margin-right:.4em;border:1px solid #999;border-radius:4px;background:#f3f3f3;cursor:pointer}
nav.filters button[aria-pressed=true]{background:#234;color:#fff;border-color:#234}
#showing{margin-left:1em;color:#555}
main{padding:1em 1.2em}
section{margin-bottom:2em}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(430px,1fr));gap:12px}
.tile{background:#fff;border:1px solid #ddd;border-top:5px solid #999;border-radius:4px;padding:8px}
.tile[hidden]{display:none}
.tile.status-done{border-top-color:#2ea043}.tile.status-cache-hit{border-top-color:#326ec8}
.tile.status-failed{border-top-color:#c82828}.tile.status-not-run{border-top-color:#969696}
.tile.flagged{box-shadow:0 0 0 2px #eb8200}
.tile .head{display:flex;justify-content:space-between;font-size:.85em;color:#555}
.imgs{display:flex;gap:6px;margin:.4em 0}
.imgs figure{margin:0;width:134px;text-align:center;font-size:.75em;color:#666}
.imgs img{width:134px;height:134px;object-fit:contain;background:#eee;display:block}
.placeholder{width:134px;height:134px;display:flex;flex-direction:column;align-items:center;justify-content:center;background:#eee;border:2px dashed #999;font-weight:700;font-size:.85em;text-align:center;overflow:hidden}
.placeholder.failed{border-color:#c82828;color:#c82828}
.placeholder small{font-weight:400;color:#333;padding:0 4px;word-break:break-word}
.instruction{margin:.3em 0;white-space:pre-wrap;word-break:break-word}
.meta{margin:.2em 0;color:#444;font-size:.9em}
ul.flags{list-style:none;padding:0;margin:.3em 0;display:flex;flex-wrap:wrap;gap:4px}
li.flag{background:#fff0dc;color:#8a4a00;border:1px solid #eb8200;border-radius:3px;padding:0 6px;font-size:.8em}
li.flag.flag-failed{background:#fde8e8;color:#a01010;border-color:#c82828}
details dl{display:grid;grid-template-columns:max-content auto;gap:.1em .8em;font-size:.85em}
details dt{font-weight:600}details dd{margin:0;word-break:break-word}
.sheets img{max-width:100%;border:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0 1em}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f3f3f3}.report dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}
.report dt{font-weight:600}.report dd{margin:0}pre{background:#f3f3f3;padding:1em;white-space:pre-wrap}
"""
