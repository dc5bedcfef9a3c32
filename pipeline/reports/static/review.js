// Review page filter: all / failed / flagged. Reads rows from the JSON data block and the
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
