// mementos-fast trace viewer (inlined into each page: no network).
// Everything about eviction comes from the engine's plan embedded by Python
// (mementos_fast.eviction_plan): a block is evicted once the slider's byte position has passed
// its `trigger` offset. Nothing here re-implements the engine's rules.
(function () {
  "use strict";
  var errors = document.getElementById("errors");
  function report(msg) {
    var li = document.createElement("li");
    li.textContent = String(msg);
    errors.appendChild(li);
  }
  window.addEventListener("error", function (e) { report("error: " + (e.message || e)); });
  window.addEventListener("unhandledrejection", function (e) { report("unhandled rejection: " + e.reason); });
  var consoleError = console.error;
  console.error = function () {
    report("console.error: " + Array.prototype.join.call(arguments, " "));
    return consoleError.apply(console, arguments);
  };

  var D = JSON.parse(document.getElementById("data").textContent);
  var slider = document.getElementById("slider");
  var kSelect = document.getElementById("k");
  var readout = document.getElementById("readout");
  var state = document.getElementById("state");
  var svg = document.getElementById("curve");
  var SVGNS = "http://www.w3.org/2000/svg";
  var W = 1000, H = 150, PADL = 48, PADB = 18, PADT = 6;
  var blocks = Array.prototype.slice.call(document.querySelectorAll(".block[data-i]"));
  var timed = Array.prototype.slice.call(document.querySelectorAll("[data-start]"));
  var fmt = function (n) { return Number(n).toLocaleString("en-US"); };
  var ymax = 1;
  D.ks.forEach(function (k) {
    D.plans[String(k)].curve.forEach(function (p) { if (p[1] > ymax) { ymax = p[1]; } });
  });
  var xmax = Math.max(1, D.total_units);
  function sx(g) { return PADL + (W - PADL - 6) * g / xmax; }
  function sy(v) { return H - PADB - (H - PADB - PADT) * v / ymax; }

  function el(name, attrs, text) {
    var e = document.createElementNS(SVGNS, name);
    Object.keys(attrs).forEach(function (a) { e.setAttribute(a, attrs[a]); });
    if (text !== undefined) { e.textContent = text; }
    return e;
  }
  function points(curve) {
    return curve.map(function (p) { return sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1); }).join(" ");
  }

  kSelect.innerHTML = "";
  D.ks.forEach(function (k) {
    var o = document.createElement("option");
    o.value = String(k);
    o.textContent = k < 0 ? "-1 (no compaction)" : k === 0 ? "0 (evict at each memento)" : String(k);
    kSelect.appendChild(o);
  });
  slider.min = "0";
  slider.max = String(D.positions.length - 1);

  function drawCurve(k, step) {
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    var plan = D.plans[String(k)];
    svg.appendChild(el("line", { "class": "axis", x1: PADL, y1: H - PADB, x2: W - 6, y2: H - PADB }));
    svg.appendChild(el("line", { "class": "axis", x1: PADL, y1: PADT, x2: PADL, y2: H - PADB }));
    svg.appendChild(el("text", { x: PADL - 4, y: PADT + 10, "text-anchor": "end" }, fmt(ymax)));
    svg.appendChild(el("text", { x: PADL - 4, y: H - PADB, "text-anchor": "end" }, "0"));
    svg.appendChild(el("text", { x: W - 6, y: H - 4, "text-anchor": "end" },
      fmt(D.total_units) + " " + D.unit + " generated"));
    svg.appendChild(el("text", { x: PADL + 4, y: H - 4 }, "visible " + D.unit + " (dashed: no compaction)"));
    svg.appendChild(el("polyline", { "class": "full", points: points(D.plans["-1"].curve) }));
    var c = plan.curve;
    var area = [[0, 0]].concat(c).concat([[c[c.length - 1][0], 0]]);
    svg.appendChild(el("polyline", { "class": "vis", points: points(area) }));
    var x = sx(D.generated[step]).toFixed(1);
    svg.appendChild(el("line", { "class": "cursor", x1: x, y1: PADT, x2: x, y2: H - PADB }));
  }

  function update(step, k, fromHash) {
    var plan = D.plans[String(k)];
    var pos = D.positions[step];
    var evicted = [], generating = [], future = 0;
    timed.forEach(function (e) {
      var start = Number(e.getAttribute("data-start"));
      var endAttr = e.getAttribute("data-end");
      var end = endAttr === null || endAttr === "" ? Infinity : Number(endAttr);
      var isFuture = start >= pos;
      e.classList.toggle("future", isFuture);
      if (isFuture) { future += 1; }
      var isGenerating = e.classList.contains("block") && start < pos && pos < end;
      e.classList.toggle("generating", isGenerating);
    });
    blocks.forEach(function (e) {
      var i = Number(e.getAttribute("data-i"));
      var t = plan.trigger[i];
      var isEvicted = t !== null && pos > t;
      e.classList.toggle("evicted", isEvicted);
      if (isEvicted) { evicted.push(i); }
      if (e.classList.contains("generating")) { generating.push(i); }
    });
    var vis = plan.visible[step];
    readout.innerHTML = "generated <b>" + fmt(D.generated[step]) + "</b> / " + fmt(D.total_units) + " " + D.unit +
      " (byte " + fmt(pos) + ") &middot; in the cache <b>" + fmt(vis) + "</b> " + D.unit +
      " &middot; evicted blocks <b>" + evicted.length + "</b> / " + blocks.length;
    state.setAttribute("data-step", String(step));
    state.setAttribute("data-pos", String(pos));
    state.setAttribute("data-k", String(k));
    state.setAttribute("data-visible", String(vis));
    state.setAttribute("data-evicted", evicted.join(","));
    state.setAttribute("data-generating", generating.join(","));
    state.setAttribute("data-future", String(future));
    drawCurve(k, step);
    if (!fromHash && window.history && history.replaceState) {
      try { history.replaceState(null, "", "#pos=" + pos + "&k=" + k); } catch (err) { /* file:// may refuse */ }
    }
  }

  function current() { return [Number(slider.value), Number(kSelect.value)]; }
  function stepForPos(pos) {
    // The last slider step at or before byte `pos`.
    var lo = 0, hi = D.positions.length - 1;
    while (lo < hi) {
      var mid = (lo + hi + 1) >> 1;
      if (D.positions[mid] <= pos) { lo = mid; } else { hi = mid - 1; }
    }
    return lo;
  }
  function fromHash() {
    var step = D.positions.length - 1, k = D.k;
    var h = (location.hash || "").replace(/^#/, "");
    h.split("&").forEach(function (kv) {
      var p = kv.split("=");
      var v = Number(p[1]);
      if (p[0] === "pos" && isFinite(v)) { step = stepForPos(v); }
      if (p[0] === "step" && isFinite(v)) { step = Math.max(0, Math.min(D.positions.length - 1, Math.floor(v))); }
      if (p[0] === "k" && D.ks.indexOf(v) >= 0) { k = v; }
      if (p[0] === "open") {
        document.querySelectorAll("details.block").forEach(function (d) { d.open = p[1] === "all"; });
      }
    });
    slider.value = String(step);
    kSelect.value = String(k);
    update(step, k, true);
  }
  slider.addEventListener("input", function () { var c = current(); update(c[0], c[1], false); });
  kSelect.addEventListener("change", function () { var c = current(); update(c[0], c[1], false); });
  window.addEventListener("hashchange", fromHash);
  document.getElementById("expand").addEventListener("click", function () {
    var all = document.querySelectorAll("details.block");
    var open = Array.prototype.some.call(all, function (d) { return !d.open; });
    all.forEach(function (d) { d.open = open; });
  });
  fromHash();
  document.body.setAttribute("data-ready", "1");
})();
