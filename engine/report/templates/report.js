// Click (or Enter on) a header of a table.sortable to sort its body rows by that column:
// numbers (data-v) descending first, text ascending first, again to reverse; empty values last.
// Rows in <tfoot> (the mean) stay where they are, after the body.
(function () {
  "use strict";
  function keyOf(row, col) {
    var cell = row.cells[col];
    if (!cell) { return null; }
    var v = cell.getAttribute("data-v");
    if (v === null) { return cell.textContent.trim().toLowerCase(); }
    return v === "" ? null : parseFloat(v);
  }
  function sortTable(table, col, th) {
    var body = table.tBodies[0];
    if (!body) { return; }
    var rows = Array.prototype.slice.call(body.rows);
    var numeric = rows.some(function (r) { return typeof keyOf(r, col) === "number"; });
    var state = th.getAttribute("aria-sort");
    var dir = state ? (state === "ascending" ? -1 : 1) : (numeric ? -1 : 1);
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) {
      h.removeAttribute("aria-sort");
    });
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    rows.sort(function (a, b) {
      var x = keyOf(a, col), y = keyOf(b, col);
      if (x === null || y === null) {
        if (x === y) { return a.getAttribute("data-i") - b.getAttribute("data-i"); }
        return x === null ? 1 : -1;
      }
      if (x < y) { return -dir; }
      if (x > y) { return dir; }
      return a.getAttribute("data-i") - b.getAttribute("data-i");
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    if (!table.tHead || !table.tBodies[0]) { return; }
    Array.prototype.forEach.call(table.tBodies[0].rows, function (r, i) { r.setAttribute("data-i", i); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.tabIndex = 0;
      th.title = "sort by this column";
      th.addEventListener("click", function () { sortTable(table, col, th); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortTable(table, col, th); }
      });
    });
  });
}());
