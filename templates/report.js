
// Sorting, filtering and expand/collapse for the findings table. The table is complete without this
// script. The script never builds HTML from strings: it moves existing rows, toggles the `hidden`
// attribute and writes plain text with textContent. Its only input besides the DOM is the JSON block
// #report-data (parsed, never evaluated).
(function () {
  "use strict";
  var table = document.getElementById("findings-table");
  if (!table || !table.tBodies.length) { return; }
  var config = {};
  try { config = JSON.parse(document.getElementById("report-data").textContent); } catch (e) { config = {}; }
  var tbody = table.tBodies[0];
  var controls = document.getElementById("finding-controls");
  var filterInput = document.getElementById("finding-filter");
  var shownLabel = document.getElementById("finding-shown");
  var noMatch = document.getElementById("no-match");
  var boxes = controls ? Array.prototype.slice.call(controls.querySelectorAll("input[name=severity]")) : [];
  var total = typeof config.total === "number" ? config.total : tbody.rows.length;

  function text(row, selector) {
    var el = row.querySelector(selector);
    return el ? el.textContent : "";
  }

  var items = Array.prototype.map.call(tbody.rows, function (row, index) {
    var parts = Array.prototype.map.call(row.querySelectorAll(".q"), function (el) { return el.textContent; });
    return {
      row: row,
      index: index,
      sev: Number(row.getAttribute("data-sev")) || 0,
      severity: row.getAttribute("data-severity") || "",
      res: Number(row.getAttribute("data-res")) || 0,
      title: text(row, ".title").toLowerCase(),
      analyzer: text(row, ".c-analyzer").toLowerCase(),
      haystack: parts.join("\n").toLowerCase()
    };
  });

  // ---- sorting
  var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var numeric = { sev: true, res: true };
  function compare(key, direction) {
    return function (a, b) {
      var x = a[key], y = b[key], result;
      if (numeric[key]) { result = x - y; } else { result = x < y ? -1 : x > y ? 1 : 0; }
      if (result === 0) {
        // Ties: most severe first, then the original order, whatever the direction.
        return (b.sev - a.sev) || (a.index - b.index);
      }
      return direction === "ascending" ? result : -result;
    };
  }
  function sortBy(th) {
    var key = th.getAttribute("data-key");
    var current = th.getAttribute("aria-sort");
    var direction;
    if (current === "ascending") { direction = "descending"; }
    else if (current === "descending") { direction = "ascending"; }
    else { direction = numeric[key] ? "descending" : "ascending"; }
    headers.forEach(function (h) { if (h.hasAttribute("data-key")) { h.setAttribute("aria-sort", "none"); } });
    th.setAttribute("aria-sort", direction);
    var sorted = items.slice().sort(compare(key, direction));
    var fragment = document.createDocumentFragment();
    sorted.forEach(function (item) { fragment.appendChild(item.row); });
    tbody.appendChild(fragment);
  }
  headers.forEach(function (th) {
    var button = th.querySelector("button.sort");
    if (button && th.hasAttribute("data-key")) {
      button.addEventListener("click", function () { sortBy(th); });
    }
  });

  // ---- filtering
  function applyFilter() {
    var wanted = {};
    boxes.forEach(function (box) { wanted[box.value] = box.checked; });
    var query = filterInput ? filterInput.value.trim().toLowerCase() : "";
    var terms = query ? query.split(/\s+/) : [];
    var shown = 0;
    items.forEach(function (item) {
      var visible = wanted[item.severity] !== false;
      for (var i = 0; visible && i < terms.length; i++) {
        if (item.haystack.indexOf(terms[i]) < 0) { visible = false; }
      }
      if (item.row.hidden === visible) { item.row.hidden = !visible; }
      if (visible) { shown++; }
    });
    if (shownLabel) {
      shownLabel.textContent = shown === total ? "all " + total + " shown" : shown + " of " + total + " shown";
    }
    if (noMatch) { noMatch.hidden = shown !== 0; }
  }
  var pending = null;
  if (filterInput) {
    filterInput.addEventListener("input", function () {
      if (pending !== null) { clearTimeout(pending); }
      pending = setTimeout(function () { pending = null; applyFilter(); }, items.length > 1000 ? 120 : 0);
    });
  }
  boxes.forEach(function (box) { box.addEventListener("change", applyFilter); });

  // ---- expand / collapse the visible rows
  function setOpen(open) {
    items.forEach(function (item) {
      if (!item.row.hidden) {
        var details = item.row.querySelector("details");
        if (details) { details.open = open; }
      }
    });
  }
  var expand = document.getElementById("expand-all");
  var collapse = document.getElementById("collapse-all");
  if (expand) { expand.addEventListener("click", function () { setOpen(true); }); }
  if (collapse) { collapse.addEventListener("click", function () { setOpen(false); }); }

  if (controls) { controls.hidden = false; }
  applyFilter();
  document.documentElement.setAttribute("data-report-ready", "1");
})();
