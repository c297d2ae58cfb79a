/* KerasUI's pages inside the Django admin: plain JavaScript, no framework, no CDN.
   Each part starts only when its element is on the page. The admin session authenticates the API. */
(function () {
  "use strict";

  /* The run's phases as the admin names them (TrainingRun.Phase). */
  const PHASES = {
    preparing: "preparing images", building: "building the model", training: "training",
    evaluating: "evaluating", saving: "saving the model",
    features: "computing the backbone's features", head: "training the head", fine_tune: "fine-tuning the backbone",
  };

  function cookie(name) {
    const match = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return match ? decodeURIComponent(match[1]) : "";
  }
  function csrfToken() {
    const input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return cookie("csrftoken") || (input ? input.value : "");
  }

  async function api(url, options) {
    options = options || {};
    const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
    if (options.method && options.method !== "GET") headers["X-CSRFToken"] = csrfToken();
    let body = options.body;
    if (body && !(body instanceof FormData) && typeof body !== "string") {
      body = JSON.stringify(body);
      headers["Content-Type"] = "application/json";
    }
    const response = await fetch(url, { method: options.method || "GET", headers: headers, body: body,
                                         credentials: "same-origin" });
    let data = null;
    try { data = await response.json(); } catch (error) { data = null; }
    if (!response.ok) throw new Error(errorText(data) || response.status + " " + response.statusText);
    return data;
  }

  /* POST a form to one of the admin's own pages and read its answer as a document: the admin's pages are
     the one door of uploading, validating and testing, with or without JavaScript. */
  async function postPage(url, body) {
    const response = await fetch(url, { method: "POST", body: body, credentials: "same-origin",
                                        headers: { "X-CSRFToken": csrfToken() } });
    return { status: response.status, page: new DOMParser().parseFromString(await response.text(), "text/html") };
  }

  function texts(page, selector) {
    return Array.from(page.querySelectorAll(selector)).map(function (node) { return node.textContent.trim(); });
  }

  function errorText(data) {
    if (!data) return "";
    if (typeof data === "string") return data;
    if (data.detail) return data.detail;
    return Object.keys(data).map(function (key) {
      const value = data[key];
      return key + ": " + (Array.isArray(value) ? value.join(" ") : typeof value === "object" ? errorText(value) : value);
    }).join("; ");
  }

  function el(tag, attributes, children) {
    const node = document.createElement(tag);
    Object.entries(attributes || {}).forEach(function ([key, value]) {
      if (value === undefined || value === null || value === false) return;
      if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    });
    (children || []).forEach(function (child) {
      if (child !== null && child !== undefined) node.append(child);
    });
    return node;
  }

  function svg(tag, attributes, text) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    Object.entries(attributes || {}).forEach(function ([key, value]) { node.setAttribute(key, value); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  /* A step of 1, 2 or 5 times a power of ten that cuts `span` into about `count` parts. */
  function niceStep(span, count) {
    const raw = span / count, power = Math.pow(10, Math.floor(Math.log10(raw)));
    const fraction = raw / power;
    return (fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10) * power;
  }

  /* The epoch whose weights the model keeps: the run's record, else the lowest validation loss. */
  function bestEpoch(run) {
    if (run.metrics && run.metrics.best_epoch) return run.metrics.best_epoch;
    for (const key of ["val_loss", "loss"]) {
      const rows = (run.history || []).filter(function (row) { return typeof row[key] === "number" && isFinite(row[key]); });
      if (rows.length) return rows.reduce(function (best, row) { return row[key] < best[key] ? row : best; }).epoch;
    }
    return null;
  }

  /* "8 s", "2 min 5 s", "1 h 3 min": as the server writes a duration (training/run_report.py). */
  function durationText(seconds) {
    seconds = Math.max(0, Math.round(seconds));
    if (seconds < 60) return seconds + " s";
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return minutes + " min" + (seconds % 60 ? " " + (seconds % 60) + " s" : "");
    return Math.floor(minutes / 60) + " h " + (minutes % 60) + " min";
  }

  const SERIES_NAMES = ["training", "validation"];

  /* A line chart of one metric per epoch: training and validation, drawn again with every new point.
     Every epoch has a tick (labels thinned evenly when there are many), the value axis has round steps,
     the best epoch is marked, and hovering an epoch shows its values (in a title and under the chart). */
  function lineChart(target, rows, keys, options) {
    // Drawn at the width it is shown (within 300–600), so its text stays readable on a phone.
    const width = Math.round(Math.min(600, Math.max(300, target.clientWidth || 600)));
    const height = width < 450 ? 220 : 260, left = 44, right = 14, top = 16, bottom = 30;
    const chart = svg("svg", { viewBox: "0 0 " + width + " " + height, role: "img",
                               "aria-label": options.title, "data-points": "0" });
    const format = function (value) {
      return options.unit ? (value * 100).toFixed(1) + "%" : value.toPrecision(3);
    };
    const series = keys.map(function (key, index) {
      return { key: key, name: SERIES_NAMES[index], css: index === 0 ? "train" : "validation",
               points: rows.filter(function (row) { return typeof row[key] === "number" && isFinite(row[key]); })
                           .map(function (row) { return [row.epoch, row[key]]; }) };
    }).filter(function (line) { return line.points.length; });
    const values = series.flatMap(function (line) { return line.points.map(function (p) { return p[1]; }); });
    if (!values.length) {
      chart.setAttribute("viewBox", "0 0 " + width + " 80");
      chart.append(svg("text", { x: width / 2, y: 44, "text-anchor": "middle", class: "empty" },
                       "No epoch finished yet"));
      target.replaceChildren(chart);
      return;
    }
    const lastEpoch = Math.max(options.epochs || 1, ...rows.map(function (row) { return row.epoch; }));
    let low = options.fromZero || options.unit ? 0 : Math.min(...values), high = Math.max(...values);
    if (options.unit) high = 1;
    if (high - low < 1e-9) high = low + 1;
    const step = options.unit ? 0.2 : niceStep(high - low, 5);
    low = Math.floor(low / step + 1e-9) * step;
    high = Math.ceil(high / step - 1e-9) * step;
    const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
    const x = function (epoch) { return left + (lastEpoch <= 1 ? 0.5 : (epoch - 1) / (lastEpoch - 1)) * (width - left - right); };
    const y = function (value) { return top + (1 - (value - low) / (high - low)) * (height - top - bottom); };
    const axis = svg("g", { class: "y-axis" });
    for (let index = 0; low + index * step <= high + step / 1e6; index++) {
      const value = low + index * step;
      axis.append(svg("line", { x1: left, x2: width - right, y1: y(value), y2: y(value), class: "grid" }));
      axis.append(svg("text", { x: left - 6, y: y(value) + 4, "text-anchor": "end" },
                      options.unit ? Math.round(value * 100) + "%" : value.toFixed(decimals)));
    }
    chart.append(axis);
    // A tick per epoch; a label every 1, 2, 5, 10, 20, 25, 50… epochs so that the labels fit (12 at most).
    const most = Math.max(4, Math.min(12, Math.floor((width - left - right) / 30)));
    const every = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000].find(function (candidate) {
      return lastEpoch / candidate <= most;
    }) || Math.ceil(lastEpoch / most);
    const xAxis = svg("g", { class: "x-axis" });
    for (let epoch = 1; epoch <= lastEpoch; epoch++) {
      const labelled = every === 1 || epoch % every === 0;
      xAxis.append(svg("line", { x1: x(epoch), x2: x(epoch), y1: height - bottom, y2: height - bottom + (labelled ? 5 : 3),
                                 class: "tick" }));
      if (labelled) xAxis.append(svg("text", { x: x(epoch), y: height - 10, "text-anchor": "middle" }, String(epoch)));
    }
    chart.append(xAxis);
    const best = options.best;
    if (best && rows.some(function (row) { return row.epoch === best; })) {
      const marker = svg("g", { class: "best-marker", "data-best-epoch": String(best) });
      marker.append(svg("line", { x1: x(best), x2: x(best), y1: top, y2: height - bottom, class: "best" }));
      marker.append(svg("text", { x: x(best) + (x(best) > width - 90 ? -4 : 4), y: top - 4, class: "best",
                                  "text-anchor": x(best) > width - 90 ? "end" : "start" }, "best: epoch " + best));
      chart.append(marker);
    }
    series.forEach(function (line) {
      chart.append(svg("polyline", { class: line.css, points: line.points.map(function (p) {
        return x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1); }).join(" ") }));
      line.points.forEach(function (p) {
        chart.append(svg("circle", { cx: x(p[0]), cy: y(p[1]), r: p[0] === best ? 5 : 3.2,
                                     class: line.css + " point" + (p[0] === best ? " best-point" : "") }));
      });
    });
    // Hover: a band per epoch with its values, as a title (any pointer) and in the line under the chart.
    const readout = el("div", { class: "kerasui-readout", "aria-live": "polite" });
    const describe = function (epoch) {
      const parts = series.map(function (line) {
        const point = line.points.find(function (p) { return p[0] === epoch; });
        return point ? line.name + " " + format(point[1]) : null;
      }).filter(Boolean);
      return "Epoch " + epoch + (epoch === best ? " (best)" : "") + ": " + parts.join(", ");
    };
    const epochs = Array.from(new Set(series.flatMap(function (line) { return line.points.map(function (p) { return p[0]; }); })))
      .sort(function (a, b) { return a - b; });
    const band = lastEpoch <= 1 ? width - left - right : (width - left - right) / (lastEpoch - 1);
    const resting = describe(epochs.includes(best) ? best : epochs[epochs.length - 1]);
    epochs.forEach(function (epoch) {
      const hover = svg("rect", { x: x(epoch) - band / 2, y: top, width: band, height: height - top - bottom,
                                  class: "hover", "data-epoch": String(epoch) });
      hover.append(svg("title", {}, describe(epoch)));
      hover.addEventListener("mouseenter", function () { readout.textContent = describe(epoch); });
      hover.addEventListener("mouseleave", function () { readout.textContent = resting; });
      chart.append(hover);
    });
    readout.textContent = resting;
    chart.setAttribute("data-points", String(series.reduce(function (sum, line) { return sum + line.points.length; }, 0)));
    target.replaceChildren(chart, readout);
  }

  /* Colour every cell of a confusion matrix by its share of the row (true label). */
  function heatmap(table) {
    table.querySelectorAll("tbody tr").forEach(function (row) {
      const cells = Array.from(row.querySelectorAll("td"));
      const total = cells.reduce(function (sum, cell) { return sum + (parseFloat(cell.textContent) || 0); }, 0);
      cells.forEach(function (cell) {
        const share = total ? (parseFloat(cell.textContent) || 0) / total : 0;
        const diagonal = cell.classList.contains("kerasui-diagonal");
        const colour = diagonal ? "65, 118, 144" : "186, 33, 33";
        cell.style.background = share ? "rgba(" + colour + ", " + (0.12 + 0.88 * share).toFixed(2) + ")" : "";
        cell.classList.toggle("hot", share > 0.5);
        cell.title = Math.round(share * 100) + "% of the images labelled " + row.querySelector("th").textContent;
      });
    });
  }

  /* "Label is <predicted>" buttons and label pickers of the misclassified gallery. */
  function relabelCards(root) {
    root.querySelectorAll("[data-relabel-item]").forEach(function (card) {
      if (card.dataset.ready) return;
      card.dataset.ready = "1";
      const item = card.dataset.relabelItem;
      const status = card.querySelector(".kerasui-card-status");
      async function relabel(label) {
        status.textContent = "saving…";
        try {
          const saved = await api("/api/datasetitem/" + item + "/", { method: "PATCH", body: { label: label } });
          card.classList.add("saved", "fixed");
          card.querySelector(".kerasui-card-true").textContent = saved.label;
          status.textContent = "✓ relabelled " + saved.label;
        } catch (error) {
          status.textContent = "✗ " + error.message;
        }
      }
      const button = card.querySelector("button.kerasui-fix");
      if (button) button.addEventListener("click", function () { relabel(button.dataset.label); });
      const select = card.querySelector("select");
      if (select) select.addEventListener("change", function () { if (select.value) relabel(select.value); });
    });
  }

  function progressMarkup(run) {
    const percent = Math.round(run.progress || 0);
    const active = run.status === "queued" || run.status === "running";
    // Before the training process reports its first phase (it imports TensorFlow first: seconds), say so.
    const phase = run.phase ? ": " + (PHASES[run.phase] || run.phase)
      : run.status === "running" ? ": starting the training process" : "";
    const bar = el("span", { class: "kerasui-progress wide " + run.status, title: run.status + " " + percent + "%" },
                   [el("span", { style: "width: " + percent + "%" })]);
    const text = run.status.charAt(0).toUpperCase() + run.status.slice(1) + (active ? phase + " " + percent + "%" : "");
    return [bar, el("span", { class: "kerasui-status", text: text })];
  }

  /* The training run page: polls the API every second while the run is queued or running. */
  function runPage(root) {
    const url = root.dataset.api, logUrl = root.dataset.log;
    const loss = root.querySelector("[data-chart=loss]"), accuracy = root.querySelector("[data-chart=accuracy]");
    const progress = root.querySelector(".kerasui-live-progress"), epoch = root.querySelector(".kerasui-live-epoch");
    let wasActive = root.dataset.active === "1", lastLog = "";

    function fact(name, content) {
      const node = root.querySelector("[data-fact='" + name + "']");
      if (node) node.replaceChildren(...(typeof content === "string" ? [document.createTextNode(content)] : content));
    }

    function setField(name, nodes) {
      const field = document.querySelector(".field-" + name + " .readonly");
      if (field) field.replaceChildren(...nodes);
    }

    async function refreshLog() {
      if (!logUrl || root.dataset.status === "queued") return;  // a queued run has no log yet
      try {
        const response = await fetch(logUrl, { credentials: "same-origin" });
        if (!response.ok || response.status === 204) return;  // 204: no log written yet
        const text = (await response.text()).split("\n").slice(-200).join("\n");
        if (text === lastLog) return;
        lastLog = text;
        const pre = el("pre", { class: "kerasui-log", text: text });
        setField("log_tail", [pre]);
        pre.scrollTop = pre.scrollHeight;
      } catch (error) { /* the log appears once the training process starts */ }
    }

    async function swapInFinishedPage() {
      // The evaluation, metrics and buttons are rendered by the server: take them from a fresh copy.
      const response = await fetch(location.href, { credentials: "same-origin" });
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      const selectors = ["#content-main fieldset", ".object-tools", "#kerasui-run .kerasui-headline"];
      if (selectors.some(function (selector) {
        return document.querySelectorAll(selector).length !== fresh.querySelectorAll(selector).length;
      })) {
        location.reload();  // the finished run shows other sections (a failed run has no results)
        return;
      }
      selectors.forEach(function (selector) {
        const old = document.querySelectorAll(selector), now = fresh.querySelectorAll(selector);
        old.forEach(function (node, index) { node.replaceWith(document.importNode(now[index], true)); });
      });
      enhance(document);
    }

    let shown = null;
    function draw() {
      if (!loss || !accuracy) return;  // a finished run without a completed epoch has no charts
      const history = shown.history || [], best = bestEpoch(shown);
      lineChart(loss, history, ["loss", "val_loss"], { title: "loss", epochs: shown.epochs, fromZero: true, best: best });
      lineChart(accuracy, history, ["accuracy", "val_accuracy"], { title: "accuracy", epochs: shown.epochs, unit: true, best: best });
    }
    let resizing = null;
    window.addEventListener("resize", function () {
      if (!shown) return;
      clearTimeout(resizing);
      resizing = setTimeout(draw, 50);
    });

    async function tick() {
      let run;
      try { run = await api(url); } catch (error) { setTimeout(tick, 3000); return; }
      shown = run;
      draw();
      if (run.status === "queued" || run.status === "running") {
        // The headline's status is the page's one progress display; a finished run's comes from the server.
        progress.replaceChildren(...progressMarkup(run));
        const best = bestEpoch(run);
        fact("best", best ? [document.createTextNode(String(best)),
                             el("span", { class: "kerasui-muted", text: " of " + (run.history || []).length })] : "—");
        fact("best-note", best ? "so far" : "no epoch completed yet");
        if (run.started_at) {
          fact("duration", durationText((Date.now() - Date.parse(run.started_at)) / 1000));
          fact("duration-note", "so far");
        }
        epoch.textContent = run.status === "queued" ? "waiting for the training process"
          : "epoch " + run.epoch + " of " + run.epochs;
      }
      const active = run.status === "queued" || run.status === "running";
      root.dataset.status = run.status;
      if (active || wasActive) await refreshLog();
      if (wasActive && !active) await swapInFinishedPage();
      wasActive = active;
      if (active) setTimeout(tick, 1000);
    }
    tick();
  }

  /* A drop zone (also click to choose, and paste): calls `onFiles` with the files. */
  function dropZone(zone, input, onFiles) {
    zone.addEventListener("click", function (event) { if (event.target !== input) input.click(); });
    zone.addEventListener("keydown", function (event) { if (event.key === "Enter" || event.key === " ") { event.preventDefault(); input.click(); } });
    input.addEventListener("change", function () { if (input.files.length) onFiles(Array.from(input.files)); });
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (event) { event.preventDefault(); zone.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (name) {
      zone.addEventListener(name, function (event) { event.preventDefault(); zone.classList.remove("over"); });
    });
    zone.addEventListener("drop", function (event) {
      const files = Array.from(event.dataTransfer.files || []);
      if (files.length) onFiles(files);
    });
  }

  /* The upload page's answer to one file: its messages, or why the file was refused. */
  function upload(url, form, onProgress) {
    return new Promise(function (resolve, reject) {
      const request = new XMLHttpRequest();
      request.open("POST", url);
      request.setRequestHeader("X-CSRFToken", csrfToken());
      request.upload.addEventListener("progress", function (event) { if (event.lengthComputable) onProgress(event.loaded); });
      request.addEventListener("load", function () {
        if (request.status === 403) { reject(new Error("you may not add images to this dataset")); return; }
        const page = new DOMParser().parseFromString(request.responseText, "text/html");
        const errors = texts(page, ".errorlist li");
        if (request.status >= 400 || errors.length) reject(new Error(errors.join(" ") || String(request.status)));
        else resolve(texts(page, ".messagelist li"));
      });
      request.addEventListener("error", function () { reject(new Error("the connection failed")); });
      request.send(form);
    });
  }

  /* The dataset page's drop zone and gallery are in dataset.js. */

  /* The Test page: drop, paste or choose an image; the prediction shows as top-5 probability bars. */
  function testPage(root) {
    const form = root.querySelector("form"), input = form.querySelector("input[type=file]");
    const zone = root.querySelector(".kerasui-drop"), select = form.querySelector("select[name=dataset]");
    const preview = root.querySelector(".kerasui-preview"), result = root.querySelector(".kerasui-result");
    const versionRow = document.getElementById("kerasui-version-row"), version = document.getElementById("kerasui-version");
    const versionsOf = JSON.parse((document.getElementById("kerasui-versions") || {}).textContent || "{}");
    let current = null;
    /* The dataset's versions (succeeded runs), as the page lists them; the picker shows only when there is a choice. */
    function versions() {
      const runs = versionsOf[select.value] || [];
      version.replaceChildren(el("option", { value: "", text: "the current one" }),
                              ...runs.map(function (run) { return el("option", { value: String(run.id), text: run.text }); }));
      versionRow.hidden = runs.length < 2;
    }
    /* The page itself predicts: the image goes to it, and the result part of its answer is shown
       (live, the last answer stays until the next one replaces it). */
    async function predict(live) {
      if (!current) { result.replaceChildren(el("p", { text: "Drop, paste or choose an image first." })); return; }
      const body = new FormData(form);
      body.set("image", current);
      if (live) body.delete("explain");  // a heatmap a second would cost many predictions each
      else result.replaceChildren(el("p", { class: "kerasui-muted", text: "Predicting…" }));
      try {
        const answer = await postPage(location.href, body);
        const errors = texts(answer.page, "#kerasui-test .errorlist li");
        const shown = answer.page.querySelector("#kerasui-test .kerasui-result");
        if (answer.status === 403) throw new Error("you may not test this dataset's model");
        if (errors.length || !shown) throw new Error(errors.join(" ") || String(answer.status));
        result.replaceChildren(...Array.from(shown.childNodes).map(function (node) { return document.importNode(node, true); }));
      } catch (error) {
        result.replaceChildren(el("p", { class: "kerasui-error", text: error.message }));
      }
    }
    function showing(file) {
      if (preview.src.startsWith("blob:")) URL.revokeObjectURL(preview.src);
      current = file;
      preview.src = URL.createObjectURL(file);
      preview.hidden = false;
    }
    function choose(files) {
      const file = files.find(function (candidate) { return candidate.type.startsWith("image/") || /\.(png|jpe?g|gif|bmp|tiff?|webp)$/i.test(candidate.name); }) || files[0];
      if (!file) return;
      showing(file);
      predict();
    }
    /* Live: a frame of the camera (camera.js) about every second through the same page, one request in flight
       at a time (the next frame waits for the answer); stops when the box is unticked or the page hidden. */
    const live = document.getElementById("kerasui-live"), camera = window.kerasuiCamera;
    if (live && camera) {
      const video = document.getElementById("kerasui-live-video"), status = document.getElementById("kerasui-live-status");
      let session = 0, running = Promise.resolve(), frames = 0;
      const sleep = function (ms) { return new Promise(function (resolve) { setTimeout(resolve, ms); }); };
      async function loop(mine) {
        while (mine === session && !document.hidden) {
          const began = Date.now();
          const blob = await camera.frame(video);
          if (mine !== session) break;
          showing(new File([blob], "camera.jpg", { type: "image/jpeg" }));
          await predict(true);
          if (mine !== session) break;
          frames += 1;
          status.textContent = frames + (frames === 1 ? " picture" : " pictures") + " predicted";
          await sleep(Math.max(0, 1000 - (Date.now() - began)));
        }
      }
      async function on() {
        const mine = ++session;
        frames = 0;
        await running;  // the previous loop's request ends first: never two in flight
        try { await camera.start(video); } catch (error) {
          live.checked = false;
          result.replaceChildren(el("p", { class: "kerasui-error", text: error.message }));
          return;
        }
        if (mine !== session) return;
        running = loop(mine);
      }
      function off() {
        session += 1;
        live.checked = false;
        camera.stop(video);
        status.textContent = "";
      }
      live.addEventListener("change", function () { if (live.checked) on(); else off(); });
      document.addEventListener("visibilitychange", function () { if (document.hidden && live.checked) off(); });
    }
    dropZone(zone, input, choose);
    document.addEventListener("paste", function (event) {
      const files = Array.from(event.clipboardData.files || []);
      if (files.length) { event.preventDefault(); choose(files); }
    });
    select.addEventListener("change", function () { versions(); predict(); });
    version.addEventListener("change", function () { predict(); });
    versions();
    form.addEventListener("submit", function (event) { event.preventDefault(); predict(); });
  }

  /* The model code as a code editor, its contract beside it and the Validate result under it. */
  function codeEditor(textarea) {
    if (!window.CodeMirror || textarea.dataset.editor) return;
    textarea.dataset.editor = "1";
    const contract = document.getElementById("kerasui-contract-template");
    const box = el("div", { class: "kerasui-editor" });
    textarea.parentNode.insertBefore(box, textarea);
    const main = el("div", {});
    box.append(main);
    main.append(textarea);
    if (contract) box.append(contract.content.cloneNode(true));
    const editor = window.CodeMirror.fromTextArea(textarea, {
      mode: "python", lineNumbers: true, indentUnit: 4, tabSize: 4, indentWithTabs: false, viewportMargin: Infinity, lineWrapping: true,
      extraKeys: { Tab: function (cm) { cm.replaceSelection("    "); } },
    });
    window.kerasuiEditor = editor;
    const validateUrl = (document.getElementById("kerasui-dataset-id") || { dataset: {} }).dataset.validateUrl;
    if (!validateUrl) return;
    const output = el("div", { class: "kerasui-validation" });
    const button = el("button", { type: "button", class: "button", text: "Validate the model code" });
    const status = el("span", { class: "kerasui-muted" });
    box.append(el("div", { class: "kerasui-validation" }, [el("div", { class: "kerasui-row" }, [button, status]), output]));
    let marked = null, latest = 0;
    button.addEventListener("click", async function () {
      // A second Validate supersedes the first: a late answer to the first is dropped, not shown.
      const request = ++latest;
      status.textContent = "Building the model in a separate process…";
      output.replaceChildren();
      if (marked !== null) { editor.removeLineClass(marked, "background", "kerasui-error-line"); marked = null; }
      const architecture = document.querySelector("select[name=architecture]");
      const size = document.querySelector("input[name=image_size]"), colour = document.querySelector("select[name=color_mode]");
      const body = new FormData();
      body.append("process", editor.getValue());
      if (architecture) body.append("architecture", architecture.value);
      if (size && size.value) body.append("image_size", size.value);
      if (colour) body.append("color_mode", colour.value);
      try {
        // The Validate page builds the model as edited and answers with its report, shown here.
        const answer = await postPage(validateUrl, body);
        if (request !== latest) return;
        const report = answer.page.getElementById("kerasui-validation-report");
        if (answer.status === 403) throw new Error("you may not validate this model code (it runs on the server)");
        if (!report) throw new Error(String(answer.status));
        status.textContent = "";
        report.querySelectorAll(".kerasui-code-listing").forEach(function (listing) { listing.remove(); });
        output.replaceChildren(document.importNode(report, true));
        const line = parseInt(report.dataset.line, 10);
        if (line) {
          marked = line - 1;
          editor.addLineClass(marked, "background", "kerasui-error-line");
          editor.scrollIntoView({ line: marked, ch: 0 }, 60);
        }
      } catch (error) {
        if (request !== latest) return;
        status.textContent = "";
        output.replaceChildren(el("ul", { class: "messagelist" }, [el("li", { class: "error", text: error.message })]));
      }
    });
  }

  /* A message line with its own ×: every warning and note can be dismissed, not only a whole block. */
  function dismissable(item, after) {
    const close = el("button", { type: "button", class: "kerasui-dismiss-line", "aria-label": "dismiss", title: "dismiss", text: "×" });
    close.addEventListener("click", function () {
      const list = item.parentNode;
      item.remove();
      if (list && !list.querySelector("li")) list.remove();
      if (after) after();
    });
    item.append(close);
  }

  function enhance(root) {
    root.querySelectorAll("table.kerasui-confusion").forEach(heatmap);
    relabelCards(root);
    root.querySelectorAll(".kerasui-log").forEach(function (log) { log.scrollTop = log.scrollHeight; });
  }

  /* Picking a pretrained starting point sets the image size to what it was trained on (224 px)
     when the size is below what it accepts. */
  function pretrainedSize(select) {
    const size = document.querySelector("input[name=image_size]");
    if (!size) return;
    const pretrained = (select.dataset.pretrained || "").split(" ");
    select.addEventListener("change", function () {
      if (pretrained.includes(select.value) && !(parseInt(size.value, 10) >= parseInt(select.dataset.pretrainedMinSize, 10))) {
        size.value = select.dataset.pretrainedSize;
      }
    });
  }

  /* Buttons and links that submit a hidden form (Train, Cancel run, Resume): no inline handlers,
     which the Content-Security-Policy would refuse to run. */
  document.addEventListener("click", function (event) {
    const trigger = event.target.closest ? event.target.closest("[data-submit-form]") : null;
    if (!trigger) return;
    const form = document.getElementById(trigger.dataset.submitForm);
    if (!form) return;
    event.preventDefault();
    form.submit();
  });

  document.addEventListener("DOMContentLoaded", function () {
    enhance(document);
    document.querySelectorAll("ul.messagelist > li").forEach(function (item) { dismissable(item); });
    const startingPoint = document.querySelector("select[name=architecture][data-pretrained]");
    if (startingPoint) pretrainedSize(startingPoint);
    const run = document.getElementById("kerasui-run");
    if (run) runPage(run);
    const test = document.getElementById("kerasui-test");
    if (test) testPage(test);
    const code = document.querySelector("textarea[name=process]");
    if (code) codeEditor(code);
  });

  window.kerasui = { api: api, lineChart: lineChart, heatmap: heatmap, el: el, dropZone: dropZone, upload: upload,
                    texts: texts, svg: svg, niceStep: niceStep, dismissable: dismissable };
})();
