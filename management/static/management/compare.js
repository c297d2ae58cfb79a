/* The Compare page: every run's loss and accuracy per epoch overlaid in one SVG chart each.
   The data is the page's JSON block (json_script); no inline script, which the CSP forbids. */
(function () {
  "use strict";

  // kerasui.js (every admin page, loaded before this file): the SVG helper and the round-step rule of its charts.
  const svg = window.kerasui.svg, niceStep = window.kerasui.niceStep;

  /* Lines of [epoch, value] points, each {name, css, dashed, points}, on shared axes. */
  function overlay(target, lines, options) {
    // Drawn at the width it is shown (within 300–600), as the run page's charts: readable text on a phone.
    const width = Math.round(Math.min(600, Math.max(300, target.clientWidth || 600)));
    const height = width < 450 ? 220 : 260, left = 48, right = 14, top = 12, bottom = 30;
    const chart = svg("svg", { viewBox: "0 0 " + width + " " + height, role: "img", "aria-label": options.title });
    lines = lines.filter(function (line) { return line.points.length; });
    const values = lines.flatMap(function (line) { return line.points.map(function (p) { return p[1]; }); });
    if (!values.length) {
      chart.append(svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "empty" }, "No epochs recorded"));
      chart.setAttribute("data-lines", "0");
      target.replaceChildren(chart);
      return;
    }
    const lastEpoch = Math.max(1, ...lines.flatMap(function (line) { return line.points.map(function (p) { return p[0]; }); }));
    let low = options.unit ? 0 : Math.min(0, ...values), high = options.unit ? Math.max(1, ...values) : Math.max(...values);
    if (high - low < 1e-9) high = low + 1;
    // Round steps on the value axis (1, 2 or 5 times a power of ten), as the run page's charts.
    const step = options.unit ? 0.25 : niceStep(high - low, 4);
    low = Math.floor(low / step + 1e-9) * step;
    high = Math.ceil(high / step - 1e-9) * step;
    const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
    const x = function (epoch) { return left + (lastEpoch <= 1 ? 0.5 : (epoch - 1) / (lastEpoch - 1)) * (width - left - right); };
    const y = function (value) { return top + (1 - (value - low) / (high - low)) * (height - top - bottom); };
    for (let value = low; value <= high + step / 2; value += step) {
      chart.append(svg("line", { x1: left, x2: width - right, y1: y(value), y2: y(value), class: "grid" }));
      chart.append(svg("text", { x: left - 6, y: y(value) + 4, "text-anchor": "end", class: "value-tick" },
                       options.unit ? Math.round(value * 100) + "%" : value.toFixed(decimals)));
    }
    // Epochs labelled in round steps (every 1, 2, 5, 10, 20, 25, 50… epochs), as the run page's charts.
    const most = Math.max(4, Math.min(12, Math.floor((width - left - right) / 30)));
    const every = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000].find(function (candidate) {
      return lastEpoch / candidate <= most;
    }) || Math.ceil(lastEpoch / most);
    for (let epoch = 1; epoch <= lastEpoch; epoch++) {
      if (every !== 1 && epoch % every !== 0) continue;
      chart.append(svg("text", { x: x(epoch), y: height - 10, "text-anchor": "middle", class: "epoch-tick" }, String(epoch)));
    }
    lines.forEach(function (line) {
      const polyline = svg("polyline", { class: "kerasui-series-" + line.series + (line.dashed ? " dashed" : ""),
                                         points: line.points.map(function (p) { return x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1); }).join(" ") });
      polyline.append(svg("title", {}, line.name));
      chart.append(polyline);
      line.points.forEach(function (p) {
        const dot = svg("circle", { cx: x(p[0]), cy: y(p[1]), r: line.dashed ? 2 : 3, class: "kerasui-series-" + line.series });
        dot.append(svg("title", {}, line.name + ", epoch " + p[0] + ": " +
                                     (options.unit ? (p[1] * 100).toFixed(1) + "%" : p[1].toFixed(4))));
        chart.append(dot);
      });
    });
    chart.setAttribute("data-lines", String(lines.length));
    target.replaceChildren(chart);
  }

  function points(history, key) {
    return (history || []).filter(function (row) { return typeof row[key] === "number" && isFinite(row[key]); })
                          .map(function (row) { return [row.epoch, row[key]]; });
  }

  function lines(runs, metric) {
    return runs.flatMap(function (run, index) {
      return [
        { name: "run " + run.id + " validation " + metric, series: index % 8, dashed: false, points: points(run.history, "val_" + metric) },
        { name: "run " + run.id + " training " + metric, series: index % 8, dashed: true, points: points(run.history, metric) },
      ];
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    const data = document.getElementById("kerasui-compare-data");
    if (!data) return;
    const runs = JSON.parse(data.textContent).runs;
    function draw() {
      document.querySelectorAll("[data-compare-chart]").forEach(function (target) {
        const metric = target.dataset.compareChart;
        overlay(target, lines(runs, metric), { title: metric, unit: metric === "accuracy" });
      });
    }
    draw();
    let resizing = null;
    window.addEventListener("resize", function () { clearTimeout(resizing); resizing = setTimeout(draw, 50); });
  });
})();
