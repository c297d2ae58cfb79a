// Dataset → Label: the queue of unlabelled images, least sure first (the suggestions' API), then those the
// model has not suggested for yet; labelled from the keyboard. No inline script: the CSP forbids them.
(function () {
  "use strict";
  const root = document.getElementById("kerasui-labelling");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  const labels = JSON.parse($("kerasui-labels").textContent);
  const canLabel = root.dataset.canLabel === "1";
  const canDelete = root.dataset.canDelete === "1";
  let labelled = Number(root.dataset.labelled);
  let total = labelled + Number(root.dataset.unlabelledCount);
  const queue = [];  // {id, image, label (suggested or null), confidence, top: [[label, p], ...], done}
  let position = 0;
  const undo = [];  // {index, previous: ""}: the labels given in this visit, newest last
  let labelledHere = 0;
  const started = Date.now();

  function csrf() { return root.querySelector("input[name=csrfmiddlewaretoken]").value; }

  async function json(url, options) {
    const response = await fetch(url, Object.assign({ credentials: "same-origin",
      headers: { Accept: "application/json", "X-CSRFToken": csrf() } }, options || {}));
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      const first = data && typeof data === "object" ? Object.values(data)[0] : null;
      throw new Error((Array.isArray(first) ? first[0] : first) || response.status + " " + response.statusText);
    }
    return data;
  }

  function fail(error) {
    $("kerasui-label-error").hidden = false;
    $("kerasui-label-error").textContent = String(error.message || error);
  }

  let more = false;  // the server has unlabelled images beyond the ones fetched
  let loading = false;

  async function load() {
    loading = true;
    const seen = new Set();
    const first = await json(root.dataset.suggestions);
    more = Boolean(first.next);
    for (const row of first.results) {
      seen.add(row.id);
      queue.push({ id: row.id, image: row.image, label: row.label, confidence: row.confidence, top: row.top });
    }
    if (first.results.length < 100) {
      const rest = await json(root.dataset.unlabelled);
      more = more || Boolean(rest.next);
      for (const row of rest.results) {
        if (!seen.has(row.id)) queue.push({ id: row.id, image: row.image, label: null, confidence: null, top: [] });
      }
    }
    loading = false;
    show();
  }

  // The queue holds a page of images: at its end, the next page (the labelled ones have left the lists).
  function refill() {
    queue.length = 0;
    undo.length = 0;
    position = 0;
    load().catch(fail);
  }

  function buttonsFor(item) {
    const names = item.top.map((pair) => pair[0]);
    for (const name of labels) if (!names.includes(name)) names.push(name);
    return names.slice(0, 9);
  }

  function progressText() {
    const minutes = (Date.now() - started) / 60000;
    const rate = labelledHere && minutes > 0 ? `, ${Math.round(labelledHere / minutes)} per minute` : "";
    return `${labelled} of ${total} labelled${rate}`;
  }

  function show() {
    $("kerasui-label-progress").textContent = progressText();
    while (position < queue.length && queue[position].done) position += 1;
    const item = queue[position];
    $("kerasui-label-card").hidden = !item;
    $("kerasui-label-empty").hidden = Boolean(item);
    const buttons = $("kerasui-label-buttons");
    buttons.replaceChildren();
    if (!item && more && !loading) { $("kerasui-label-empty").hidden = true; refill(); return; }
    if (!item) return;
    $("kerasui-label-image").src = item.image;
    $("kerasui-label-image").dataset.item = String(item.id);
    $("kerasui-label-suggestion").textContent = item.label
      ? `Suggested: ${item.label} (${Math.round(item.confidence * 100)}%) — Enter accepts`
      : "No suggestion yet: choose a label";
    buttonsFor(item).forEach((name, index) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "button" + (name === item.label ? " kerasui-suggested" : "");
      button.dataset.label = name;
      const key = document.createElement("kbd");
      key.textContent = String(index + 1);
      button.append(key, document.createTextNode(name));
      button.disabled = !canLabel;
      button.addEventListener("click", () => give(name));
      buttons.append(button);
    });
  }

  async function post(ids, label) {
    const body = new URLSearchParams({ ids: ids.join(","), label: label });
    return json(root.dataset.set, { method: "POST", body: body });
  }

  async function give(label) {
    const item = queue[position];
    if (!item || !canLabel || !label) return;
    try {
      await post([item.id], label);
    } catch (error) { fail(error); return; }
    item.done = true;
    item.given = label;
    undo.push(position);
    labelled += 1;
    labelledHere += 1;
    position += 1;
    show();
  }

  async function takeBack() {
    const index = undo.pop();
    if (index === undefined) return;
    const item = queue[index];
    try {
      await post([item.id], "");
    } catch (error) { undo.push(index); fail(error); return; }
    item.done = false;
    labelled -= 1;
    labelledHere -= 1;
    position = index;
    show();
  }

  function move(step) {
    let next = position + step;
    while (next >= 0 && next < queue.length && queue[next].done) next += step;
    if (next >= 0 && next <= queue.length) position = Math.min(next, queue.length);
    show();
  }

  async function remove() {
    const item = queue[position];
    if (!item || !canDelete || !window.confirm("Delete this image?")) return;
    try {
      const response = await fetch(root.dataset.delete + item.id + "/", { method: "DELETE", credentials: "same-origin",
        headers: { "X-CSRFToken": csrf() } });
      if (!response.ok) throw new Error(`the image was not deleted (${response.status})`);
    } catch (error) { fail(error); return; }
    item.done = true;
    total -= 1;
    show();
  }

  // Grid mode: a page of the surest suggestions as thumbnails, all ticked; the person unticks the wrong ones
  // and the ticked ones are accepted at once (the bulk accept, POST …/suggestions/accept/ with their ids).
  const GRID_PAGE = 24;
  const grid = $("kerasui-grid");
  const skipped = new Set();  // unticked in this visit: left for one at a time, not shown in the grid again
  let gridLoading = false;

  function tiles() { return Array.from($("kerasui-grid-tiles").querySelectorAll("input[type=checkbox]")); }

  async function gridLoad() {
    gridLoading = true;
    const label = $("kerasui-grid-label").value;
    const size = Math.min(500, GRID_PAGE + skipped.size);
    const url = `${grid.dataset.url}&page_size=${size}` + (label ? `&label=${encodeURIComponent(label)}` : "");
    try {
      const page = await json(url);
      const rows = page.results.filter((row) => !skipped.has(row.id)).slice(0, GRID_PAGE);
      $("kerasui-grid-tiles").replaceChildren(...rows.map((row) => {
        const tile = document.createElement("label");
        tile.className = "kerasui-tile";
        const box = document.createElement("input");
        box.type = "checkbox";
        box.checked = true;
        box.dataset.item = String(row.id);
        const image = document.createElement("img");
        image.src = row.thumbnail || row.image;
        image.alt = `suggested ${row.label}`;
        const caption = document.createElement("span");
        caption.textContent = `${row.label} ${Math.round(row.confidence * 100)}%`;
        tile.append(box, image, caption);
        return tile;
      }));
      $("kerasui-grid-status").textContent = rows.length ? "" : "No suggestion left here.";
      $("kerasui-grid-accept").disabled = !rows.length;
      const first = tiles()[0];
      if (first) first.focus();
    } catch (error) { fail(error); }
    gridLoading = false;
  }

  function gridOpen(open) {
    grid.hidden = !open;
    $("kerasui-label-single").hidden = open;
    $("kerasui-grid-open").hidden = open;
    if (open) gridLoad();
    else { position = 0; show(); }
  }

  async function gridAccept() {
    if (gridLoading) return;
    gridLoading = true;  // until the next page is shown: one accept at a time
    const boxes = tiles();
    const ids = boxes.filter((box) => box.checked).map((box) => Number(box.dataset.item));
    for (const box of boxes) if (!box.checked) skipped.add(Number(box.dataset.item));
    let answer = { labelled: 0 };
    if (ids.length) {
      try {
        answer = await json(root.dataset.accept, { method: "POST", body: JSON.stringify({ ids: ids }),
          headers: { Accept: "application/json", "Content-Type": "application/json", "X-CSRFToken": csrf() } });
      } catch (error) { gridLoading = false; fail(error); return; }
    }
    labelled += answer.labelled;
    labelledHere += answer.labelled;
    const accepted = new Set(ids);
    for (const item of queue) if (accepted.has(item.id)) item.done = true;
    $("kerasui-label-progress").textContent = progressText();
    await gridLoad();
    $("kerasui-grid-status").textContent = `${answer.labelled} accepted` +
      ($("kerasui-grid-tiles").children.length ? "" : "; no suggestion left here.");
  }

  // Arrows move the focus between the tiles, by rows as they are laid out (3 a row on a phone, more wider).
  function gridMove(key) {
    const boxes = tiles();
    const at = boxes.indexOf(document.activeElement);
    if (at < 0) { if (boxes[0]) boxes[0].focus(); return; }
    const top = (box) => box.parentElement.offsetTop;
    const perRow = Math.max(1, boxes.filter((box) => top(box) === top(boxes[0])).length);
    const step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: perRow, ArrowUp: -perRow }[key];
    const next = boxes[Math.min(boxes.length - 1, Math.max(0, at + step))];
    next.focus();
  }

  if (grid) {
    $("kerasui-grid-open").addEventListener("click", () => gridOpen(true));
    $("kerasui-grid-close").addEventListener("click", () => gridOpen(false));
    $("kerasui-grid-accept").addEventListener("click", gridAccept);
    $("kerasui-grid-label").addEventListener("change", gridLoad);
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (grid && !grid.hidden) {
      // A focused button, select or text box keeps its own keys; a tile's checkbox does not.
      const target = event.target;
      if (target instanceof HTMLButtonElement || target instanceof HTMLSelectElement ||
          (target instanceof HTMLInputElement && target.type !== "checkbox")) return;
      if (event.key === "Enter") gridAccept();
      else if (event.key.startsWith("Arrow")) gridMove(event.key);
      else if (event.key === "Escape" || event.key === "g" || event.key === "G") gridOpen(false);
      else return;  // Space ticks and unticks the focused tile, as any checkbox
      event.preventDefault();
      return;
    }
    if (event.target instanceof HTMLInputElement || event.target instanceof HTMLSelectElement) return;
    if (grid && (event.key === "g" || event.key === "G")) { gridOpen(true); event.preventDefault(); return; }
    const item = queue[position];
    if (/^[1-9]$/.test(event.key) && item) {
      const name = buttonsFor(item)[Number(event.key) - 1];
      if (name) give(name);
    } else if (event.key === "Enter" && item && item.label) {
      give(item.label);
    } else if (event.key === "ArrowRight" || event.key === "x" || event.key === "X") {
      move(1);
    } else if (event.key === "ArrowLeft") {
      move(-1);
    } else if (event.key === "Backspace") {
      takeBack();
    } else if (event.key === "d" || event.key === "D") {
      remove();
    } else {
      return;
    }
    event.preventDefault();
  });
  $("kerasui-label-other-button").addEventListener("click", () => {
    const name = $("kerasui-label-other").value.trim();
    if (name) give(name).then(() => { if (!labels.includes(name)) labels.push(name); $("kerasui-label-other").value = ""; show(); });
  });

  const acceptAll = $("kerasui-label-accept-all");
  if (acceptAll) acceptAll.addEventListener("click", async () => {
    const least = Number($("kerasui-label-min").value) / 100;
    if (!(least >= 0.5 && least <= 1)) { fail(new Error("a confidence between 50 and 100%")); return; }
    try {
      const answer = await json(root.dataset.accept, { method: "POST", body: JSON.stringify({ min_confidence: least }),
        headers: { Accept: "application/json", "Content-Type": "application/json", "X-CSRFToken": csrf() } });
      $("kerasui-label-accepted").textContent = `${answer.labelled} labelled`;
      labelled += answer.labelled;
      for (const item of queue) if (!item.done && item.label && item.confidence >= least) item.done = true;
      position = 0;
      show();
    } catch (error) { fail(error); }
  });

  // Pictures from the camera (management/camera.js): counted, and an unlabelled one joins the queue.
  root.addEventListener("kerasui:camera-picture", (event) => {
    const item = event.detail;
    total += 1;
    if (item.label) labelled += 1;
    else queue.push({ id: item.id, image: item.image, label: null, confidence: null, top: [] });
    show();
  });

  load().catch(fail);
})();
