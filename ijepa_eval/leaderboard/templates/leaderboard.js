/* ijepa-eval leaderboard: sortable tables and protocol/model filters. Vanilla JS, no network; reads the
   page's data-* attributes only. Filter state lives in the URL hash so a filtered view can be linked. */
(function () {
  "use strict";

  function sortKey(cell) {
    var v = cell.getAttribute("data-value");
    return v === null || v === "" ? null : parseFloat(v);
  }

  function sortBy(th) {
    var table = th.closest("table");
    var tbody = table.tBodies[0];
    var index = Array.prototype.indexOf.call(th.parentNode.children, th);
    var dir = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
    table.querySelectorAll("th[aria-sort]").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir);
    var sign = dir === "ascending" ? 1 : -1;
    var numeric = th.hasAttribute("data-numeric");
    var rows = Array.prototype.slice.call(tbody.rows);
    rows.sort(function (a, b) {
      var x = a.cells[index], y = b.cells[index];
      if (numeric) {
        var p = sortKey(x), q = sortKey(y);
        if (p === null || q === null) { return (p === null) - (q === null); } /* missing last either way */
        return sign * (p - q);
      }
      return sign * x.textContent.trim().localeCompare(y.textContent.trim(), undefined, {numeric: true});
    });
    rows.forEach(function (r) { tbody.appendChild(r); });
  }

  function readHash() {
    var state = {};
    location.hash.replace(/^#/, "").split("&").forEach(function (part) {
      var kv = part.split("=");
      if (kv.length === 2) { state[decodeURIComponent(kv[0])] = decodeURIComponent(kv[1]); }
    });
    return state;
  }

  function applyFilters() {
    var protocol = document.getElementById("filter-protocol");
    var model = document.getElementById("filter-model");
    var p = protocol ? protocol.value : "", m = model ? model.value : "";
    document.querySelectorAll("[data-protocols], [data-model]").forEach(function (el) {
      var protocols = el.getAttribute("data-protocols");
      var okP = !p || protocols === null || protocols.split(" ").indexOf(p) >= 0;
      var okM = !m || !el.hasAttribute("data-model") || el.getAttribute("data-model") === m;
      el.hidden = !(okP && okM);
    });
    document.querySelectorAll("table.lb").forEach(function (table) {
      var counter = table.parentNode.querySelector("[data-count]");
      if (!counter) { return; }
      var rows = table.tBodies[0].rows, shown = 0;
      for (var i = 0; i < rows.length; i++) { if (!rows[i].hidden) { shown++; } }
      counter.textContent = shown + " of " + rows.length + " rows";
    });
    var hash = [];
    if (p) { hash.push("protocol=" + encodeURIComponent(p)); }
    if (m) { hash.push("model=" + encodeURIComponent(m)); }
    var next = hash.length ? "#" + hash.join("&") : "";
    var state = readHash();
    if (next !== location.hash && (next || state.protocol || state.model)) { /* keep other anchors (#every-result) */
      history.replaceState(null, "", next || location.pathname + location.search);
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("table.lb thead th").forEach(function (th) {
      var button = th.querySelector("button");
      if (button) { button.addEventListener("click", function () { sortBy(th); }); }
    });
    var state = readHash();
    [["filter-protocol", state.protocol], ["filter-model", state.model]].forEach(function (pair) {
      var select = document.getElementById(pair[0]);
      if (!select) { return; }
      if (pair[1] && Array.prototype.some.call(select.options, function (o) { return o.value === pair[1]; })) {
        select.value = pair[1];
      }
      select.addEventListener("change", applyFilters);
    });
    applyFilters();
  });
})();
