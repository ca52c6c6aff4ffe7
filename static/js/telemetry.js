/* Device page: charts of the device's numeric series (uPlot), from devices.telemetry, updated live. */
(function () {
  "use strict";
  var root = document.getElementById("telemetry");
  if (!root) return;
  var list = document.getElementById("series-list");
  var rowTemplate = document.getElementById("series-template");
  var noSeries = document.getElementById("no-series");
  var note = document.getElementById("chart-note");
  var chartsEl = document.getElementById("charts");
  var custom = document.getElementById("chart-custom");
  var RANGES = JSON.parse(root.dataset.ranges); // seconds of each range button (null: all)
  var POINTS = 1000;
  var state = { range: "1h", since: null, until: null, series: [] };
  var firstUrl = root.dataset.firstUrl; // the server named it in the page's head: already loading
  var plots = []; // {name, plot, data: [xs, mean, min, max], counts}
  var bucket = 1; // seconds per bucket of the drawn charts
  var view = [0, 1]; // the time range the charts show: the one asked for, sliding while live
  var loading = 0;

  /* The chart's state lives in the page's query string (chart_*), beside the history's filters. */
  function readAddress() {
    var params = new URLSearchParams(window.location.search);
    if (params.get("chart_range") in RANGES) state.range = params.get("chart_range");
    if (params.get("chart_since") && params.get("chart_until")) {
      state.since = Number(params.get("chart_since"));
      state.until = Number(params.get("chart_until"));
    }
    state.series = params.getAll("chart_series");
  }

  function writeAddress() {
    var params = new URLSearchParams(window.location.search);
    ["chart_range", "chart_since", "chart_until", "chart_series"].forEach(function (name) { params.delete(name); });
    if (state.since !== null) {
      params.set("chart_since", String(state.since));
      params.set("chart_until", String(state.until));
    } else {
      params.set("chart_range", state.range);
    }
    state.series.forEach(function (name) { params.append("chart_series", name); });
    history.replaceState(null, "", window.location.pathname + "?" + params.toString() + window.location.hash);
  }

  function boxes() { return Array.prototype.slice.call(list.querySelectorAll('input[name="series"]')); }

  function syncBoxes() {
    boxes().forEach(function (box) { box.checked = state.series.indexOf(box.value) >= 0; });
    root.querySelectorAll(".range").forEach(function (button) {
      button.setAttribute("aria-pressed", String(state.since === null && button.dataset.range === state.range));
    });
  }

  function iso(seconds) { return new Date(seconds * 1000).toISOString(); }

  /* The live charts slide with time: a preset range that ends now, not a custom or zoomed one. */
  function isLive() { return state.since === null; }

  function chartUrl() {
    var params = new URLSearchParams();
    state.series.forEach(function (name) { params.append("series", name); });
    params.set("points", String(POINTS));
    if (state.since !== null) {
      params.set("since", iso(state.since));
      params.set("until", iso(state.until));
    } else if (RANGES[state.range] !== null) {
      params.set("since", iso(Date.now() / 1000 - RANGES[state.range]));
    }
    return root.dataset.url + "?" + params.toString();
  }

  function load(url) {
    writeAddress();
    syncBoxes();
    if (!state.series.length) { draw({ series: [], bucket_seconds: 1 }); return; }
    var current = ++loading;
    note.textContent = "loading…";
    /* The same mode and credentials as the preload in the page's head, so the browser reuses it. */
    fetch(url || chartUrl(), { mode: "cors", credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) throw new Error("the server answered " + response.status);
        return response.json();
      })
      .then(function (data) { if (current === loading) whenReady(function () { draw(data); }); })
      .catch(function (err) { if (current === loading) note.textContent = "The chart could not be loaded: " + err.message; });
  }

  /* Columns for uPlot: times, mean, min, max; a null breaks the line where the device was silent. */
  function columns(points, size) {
    var steps = [];
    for (var i = 1; i < points.length; i++) steps.push(points[i][0] - points[i - 1][0]);
    steps.sort(function (a, b) { return a - b; });
    var typical = steps.length ? steps[Math.floor(steps.length / 2)] : size;
    var gap = Math.max(size * 1.5, typical * 2.5);
    var data = [[], [], [], []];
    var counts = [];
    points.forEach(function (p, n) {
      if (n > 0 && p[0] - points[n - 1][0] > gap) push(data, counts, [points[n - 1][0] + size, null, null, null, 0]);
      push(data, counts, p);
    });
    return { data: data, counts: counts, gap: gap };
  }

  function push(data, counts, p) {
    data[0].push(p[0]);
    data[1].push(p[3]);
    data[2].push(p[1]);
    data[3].push(p[2]);
    counts.push(p[4]);
  }

  function options(name, width) {
    return {
      title: name,
      width: width,
      height: 180,
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"); },
      cursor: { drag: { x: true, y: false, setScale: false }, sync: { key: "carweb-charts" } },
      scales: { x: { time: true, range: function () { return [view[0], view[1]]; } } },
      series: [
        { label: "UTC", value: function (u, v) { return v === null ? "—" : carwebFormatTime(new Date(v * 1000).toISOString()); } },
        { label: "mean", stroke: "#2556c7", width: 1.5 },
        { label: "min", stroke: "rgba(37, 86, 199, .35)", width: 1 },
        { label: "max", stroke: "rgba(37, 86, 199, .35)", width: 1 },
      ],
      bands: [{ series: [3, 2], fill: "rgba(37, 86, 199, .12)" }],
      axes: [{ values: timeLabels }, { size: 64 }],
      hooks: { setSelect: [zoomTo] },
    };
  }

  function pad(n) { return n < 10 ? "0" + n : String(n); }

  /* 24-hour UTC labels: with seconds for minutes-long views, with the date for views over a day. */
  function timeLabels(u, splits) {
    var span = u.scales.x.max - u.scales.x.min;
    return splits.map(function (v) {
      var d = new Date(v * 1000);
      var time = pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + (span < 600 ? ":" + pad(d.getUTCSeconds()) : "");
      return span > 86400 ? pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + (span > 14 * 86400 ? "" : " " + time) : time;
    });
  }

  /* Dragging across a chart shows that stretch of time, read again at its own resolution. */
  function zoomTo(u) {
    if (u.select.width < 3) return;
    var from = u.posToVal(u.select.left, "x");
    var to = u.posToVal(u.select.left + u.select.width, "x");
    u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
    state.since = Math.floor(from * 1000) / 1000;
    state.until = Math.ceil(to * 1000) / 1000 + 0.001; // the newest point's own millisecond too
    load();
  }

  /* Data can arrive before uPlot has loaded (the script after this one): then draw once the document's scripts have run. */
  function whenReady(then) {
    if (window.uPlot || document.readyState !== "loading") then();
    else document.addEventListener("DOMContentLoaded", then);
  }

  function draw(data) {
    plots.forEach(function (p) { p.plot.destroy(); });
    plots = [];
    chartsEl.textContent = "";
    bucket = data.bucket_seconds || 1;
    if (data.since) view = [Date.parse(data.since) / 1000, Date.parse(data.until) / 1000];
    var width = chartsEl.clientWidth || 800;
    data.series.forEach(function (series) {
      var el = document.createElement("div");
      el.className = "chart";
      el.dataset.series = series.name;
      chartsEl.appendChild(el);
      var cols = columns(series.points, bucket);
      var entry = { name: series.name, el: el, data: cols.data, counts: cols.counts, gap: cols.gap };
      entry.plot = new uPlot(options(series.name, width), cols.data, el);
      el.dataset.points = String(series.points.length);
      plots.push(entry);
    });
    var empty = data.series.every(function (s) { return !s.points.length; });
    note.textContent = !data.series.length ? "Pick a series to chart." :
      (empty ? "No values in this range. " : "") + describe(data);
    root.dataset.drawn = String(performance.now());
  }

  function describe(data) {
    var size = data.bucket_seconds;
    var text = size >= 1 ? (size >= 60 ? size / 60 + " min" : size + " s") : Math.round(size * 1000) + " ms";
    return "Buckets of " + text + " (min, max and mean), from " + data.source + "." + (isLive() ? "" : " Pick a range to go back to live.");
  }

  /* One live value: into the newest bucket when it is still open, else as a new bucket. */
  function addPoint(entry, t, value) {
    var xs = entry.data[0];
    var n = xs.length - 1;
    if (n >= 0 && entry.counts[n] > 0 && t < xs[n] + bucket) {
      var count = entry.counts[n];
      entry.data[1][n] = (entry.data[1][n] * count + value) / (count + 1);
      entry.data[2][n] = Math.min(entry.data[2][n], value);
      entry.data[3][n] = Math.max(entry.data[3][n], value);
      entry.counts[n] = count + 1;
    } else {
      if (n >= 0 && t - xs[n] > entry.gap) push(entry.data, entry.counts, [xs[n] + bucket, null, null, null, 0]);
      push(entry.data, entry.counts, [Math.floor(t / bucket) * bucket, value, value, value, 1]);
    }
    var span = RANGES[state.range];
    view = [span === null ? view[0] : Math.max(view[0], t - span), Math.max(view[1], t)];
    while (span !== null && xs.length > 1 && xs[0] < t - span) {
      entry.data.forEach(function (column) { column.shift(); });
      entry.counts.shift();
    }
    entry.plot.setData(entry.data);
    entry.el.dataset.points = String(entry.counts.filter(function (c) { return c > 0; }).length);
  }

  function seriesRow(name) {
    var row = null;
    boxes().forEach(function (box) { if (box.value === name) row = box.closest("li"); });
    if (row) return row;
    row = rowTemplate.content.firstElementChild.cloneNode(true);
    var box = row.querySelector("input");
    box.value = name;
    row.querySelector(".series-name").textContent = name;
    list.appendChild(row);
    noSeries.hidden = true;
    return row;
  }

  function onMessages(messages) {
    var added = 0;
    messages.forEach(function (m) {
      var names = Object.keys(m.points || {});
      if (!names.length) return;
      var t = Date.parse(m.received_at) / 1000;
      names.forEach(function (name) {
        var row = seriesRow(name);
        carwebSetField(row, "value", String(m.points[name]));
        carwebSetField(row, "at", carwebFormatTime(m.received_at));
      });
      if (!isLive()) return;
      plots.forEach(function (entry) {
        if (entry.name in m.points) { addPoint(entry, t, m.points[entry.name]); added += 1; }
      });
    });
    if (added) root.dataset.live = String(Number(root.dataset.live || 0) + added);
  }

  list.addEventListener("change", function () {
    state.series = boxes().filter(function (box) { return box.checked; }).map(function (box) { return box.value; });
    load();
  });
  root.querySelectorAll(".range").forEach(function (button) {
    button.addEventListener("click", function () {
      state.range = button.dataset.range;
      state.since = state.until = null;
      load();
    });
  });
  custom.addEventListener("submit", function (event) {
    event.preventDefault();
    var since = Date.parse(custom.elements.since.value + "Z") / 1000;
    var until = Date.parse(custom.elements.until.value + "Z") / 1000;
    if (!(until > since)) { note.textContent = "The range must end after it starts."; return; }
    state.since = since;
    state.until = until;
    load();
  });

  readAddress();
  if (firstUrl) state.series = new URLSearchParams(firstUrl.split("?")[1]).getAll("series");
  load(firstUrl || null);
  /* The page's other scripts (uPlot, the live connection) run after this one. */
  document.addEventListener("DOMContentLoaded", function () {
    carwebLive(function (s, ready) { ready(); }).on("messages", onMessages);
  });
})();
