/* The dataset page's images: the drop zone, what an upload added and skipped (kept on the page until
   dismissed), the gallery (newest first, a label box under each image) and the per-label counts, which
   follow uploads and relabels without reloading the page. Helpers come from kerasui.js. */
(function () {
  "use strict";

  const k = window.kerasui;
  let refreshGallery = function () {};

  /* The counts (and the gallery's label list) as the server renders them now: a fresh copy of this page. */
  async function refreshSummary() {
    const summary = document.getElementById("kerasui-images-summary");
    if (!summary) return;
    const response = await fetch(location.href, { credentials: "same-origin" });
    if (!response.ok) return;
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    const now = fresh.getElementById("kerasui-images-summary");
    if (now) summary.replaceChildren(...Array.from(now.childNodes).map(function (node) { return document.importNode(node, true); }));
    summary.dataset.refreshed = String(parseInt(summary.dataset.refreshed || "0", 10) + 1);
    const gallery = document.getElementById("kerasui-gallery"), freshGallery = fresh.getElementById("kerasui-gallery");
    if (gallery && freshGallery) {
      gallery.dataset.labels = freshGallery.dataset.labels;
      gallery.dispatchEvent(new CustomEvent("kerasui:labels"));
    }
  }

  /* While a zip import runs (a job), the summary follows it every two seconds; when it ends, the gallery too. */
  async function followImports() {
    const summary = document.getElementById("kerasui-images-summary");
    while (summary && summary.querySelector("[data-import-active]")) {
      await new Promise(function (resolve) { setTimeout(resolve, 2000); });
      await refreshSummary();
      if (!summary.querySelector("[data-import-active]")) await refreshGallery();
    }
  }

  /* One upload's outcome, kept until its × is pressed: what was imported, what was skipped and why. */
  function report(results, notes, problems) {
    const items = notes.map(function (text) { return k.el("li", { class: "success", text: text }); })
      .concat(problems.map(function (text) { return k.el("li", { class: "warning", text: text }); }));
    if (!items.length) return;
    const close = k.el("button", { type: "button", class: "kerasui-dismiss", "aria-label": "dismiss all", title: "dismiss all", text: "×" });
    const block = k.el("div", { class: "kerasui-upload-report" }, [close, k.el("ul", { class: "messagelist" }, items)]);
    close.addEventListener("click", function () { block.remove(); });
    // Each line can go on its own too (kerasui.js); the report goes with its last line.
    if (items.length > 1) items.forEach(function (item) { k.dismissable(item, function () { if (!block.querySelector("li")) block.remove(); }); });
    results.prepend(block);
  }

  /* A zip is imported by a job: its page is asked every second until the import has ended; then the
     lines of its report (what was added, what was skipped and why) are what the drop zone shows. */
  async function followImport(id) {
    const url = document.getElementById("kerasui-upload").dataset.importUrl.replace(/\/0\/$/, "/" + id + "/");
    for (let asked = 0; asked < 1800; asked += 1) {
      const response = await fetch(url, { credentials: "same-origin" });
      if (response.ok) {
        const page = new DOMParser().parseFromString(await response.text(), "text/html");
        const state = page.getElementById("kerasui-import");
        if (state && !["queued", "running"].includes(state.dataset.status)) {
          return Array.from(page.querySelectorAll("#kerasui-import-report li")).map(function (li) { return li.textContent.trim(); });
        }
      }
      await new Promise(function (resolve) { setTimeout(resolve, 1000); });
    }
    return ["Import " + id + " is still running: its page shows how far it is."];
  }

  /* "Imported 1 image into 'X' (cat: 1)." lines as one: "Imported 4 images into 'X' (cat: 3, dog: 1)." */
  function summary(notes) {
    let total = 0, into = "";
    const counts = {};
    notes.forEach(function (note) {
      const match = /^Imported (\d+) images? into (.*) \((.*)\)\.$/.exec(note);
      if (!match) return;
      total += parseInt(match[1], 10);
      into = match[2];
      match[3].split(", ").forEach(function (part) {
        const pair = /^(.*): (\d+)$/.exec(part);
        if (pair) counts[pair[1]] = (counts[pair[1]] || 0) + parseInt(pair[2], 10);
      });
    });
    const labels = Object.keys(counts).sort().map(function (label) { return label + ": " + counts[label]; }).join(", ");
    return "Imported " + total + (total === 1 ? " image" : " images") + " into " + into + " (" + (labels || "none") + ").";
  }

  function uploader(root) {
    const zone = root.querySelector(".kerasui-drop"), input = zone.querySelector("input[type=file]");
    const labelInput = root.querySelector("[data-upload-label]"), bar = root.querySelector(".kerasui-upload-progress");
    const fill = bar.querySelector(".kerasui-progress > span"), text = bar.querySelector(".kerasui-status");
    const results = root.querySelector(".kerasui-upload-results");
    const dataset = root.dataset.dataset;
    // The upload page answers each file by redirecting to itself (a light page) with its messages.
    const url = root.dataset.url + "?next=" + encodeURIComponent(root.dataset.url);
    k.dropZone(zone, input, async function (files) {
      const unlabelledBox = root.querySelector("[data-upload-unlabelled]");
      const unlabelled = Boolean(unlabelledBox && unlabelledBox.checked);
      const label = unlabelled ? "" : labelInput.value.trim();
      const images = files.filter(function (file) { return !/\.zip$/i.test(file.name); });
      if (images.length && !label && !unlabelled) {
        text.textContent = "Type the label of these images first (a zip can label by folder).";
        bar.hidden = false;
        labelInput.focus();
        return;
      }
      root.dataset.state = "uploading";
      const total = files.reduce(function (sum, file) { return sum + file.size; }, 0) || 1;
      let done = 0;
      const notes = [], problems = [];
      bar.hidden = false;
      const show = function (loaded) {
        const percent = Math.min(100, Math.round((done + loaded) / total * 100));
        fill.style.width = percent + "%";
        text.textContent = "Uploading " + (files.length === 1 ? "1 file" : files.length + " files") + ": " + percent + "%";
      };
      for (const file of files) {
        const form = new FormData();
        form.append("dataset", dataset);
        form.append("label", label);
        if (unlabelled) form.append("unlabelled", "on");
        form.append("file", file);
        try {
          const messages = await k.upload(url, form, show);
          for (const message of messages) {
            const queued = /\(import (\d+)\)/.exec(message);
            if (queued) text.textContent = "Importing " + file.name + "…";
            (queued ? await followImport(queued[1]) : [message]).forEach(function (line) {
              (/^(Skipped|Import \d+ )/.test(line) ? problems : notes).push(line);
            });
          }
        } catch (error) {
          // The server's message usually names the file already ("x.jpg: not an image"): not twice.
          problems.push(error.message.indexOf(file.name + ":") === 0 ? error.message : file.name + ": " + error.message);
        }
        done += file.size;
        show(0);
      }
      fill.style.width = "100%";
      input.value = "";
      // Many files: one line adding up what each one's message said ("Imported 1 image into 'X' (cat: 1).").
      const shown = notes.length > 3 ? [summary(notes)] : notes;
      report(results, shown, problems);
      text.textContent = problems.length ? "Done, with problems: see below." : "Done.";
      await Promise.all([refreshSummary(), refreshGallery()]);
      root.dataset.state = "done";
    });
  }

  /* The existing label nearest to a typed one (at most two letters changed, added, removed or swapped, or
     the same but for case), else null. */
  function closest(typed, labels) {
    function distance(a, b) {
      const rows = [];
      for (let i = 0; i <= a.length; i++) { rows.push([i]); }
      for (let j = 1; j <= b.length; j++) { rows[0][j] = j; }
      for (let i = 1; i <= a.length; i++) {
        for (let j = 1; j <= b.length; j++) {
          rows[i][j] = Math.min(rows[i - 1][j] + 1, rows[i][j - 1] + 1, rows[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
          if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) rows[i][j] = Math.min(rows[i][j], rows[i - 2][j - 2] + 1);
        }
      }
      return rows[a.length][b.length];
    }
    let best = null, bestDistance = 3;
    labels.forEach(function (label) {
      const d = label.toLowerCase() === typed.toLowerCase() ? 0 : distance(typed.toLowerCase(), label.toLowerCase());
      if (d < bestDistance) { best = label; bestDistance = d; }
    });
    return best;
  }

  function gallery(root) {
    const dataset = root.dataset.dataset, pageSize = 24;
    const filter = root.querySelector("select[data-filter]"), sort = root.querySelector("select[data-sort]");
    const cards = root.querySelector(".kerasui-cards"), pager = root.querySelector(".kerasui-pager");
    const list = root.querySelector("datalist");
    let page = 1;

    function labels() {
      const names = JSON.parse(root.dataset.labels || "[]"), chosen = filter.value;
      filter.replaceChildren(k.el("option", { value: "", text: "All labels" }),
                             ...names.map(function (label) { return k.el("option", { value: label, text: label }); }));
      filter.value = names.includes(chosen) ? chosen : "";
      list.replaceChildren(...names.map(function (label) { return k.el("option", { value: label }); }));
    }

    function card(item) {
      const input = k.el("input", { type: "text", value: item.label, list: list.id, "aria-label": "label of image " + item.id });
      const status = k.el("a", { class: "kerasui-muted", href: "/admin/management/datasetitem/" + item.id + "/change/",
                                 text: "#" + item.id, title: "this image's page" });
      /* Enter saves this label (through "change") and nothing else: the box sits inside the dataset's
         form, whose first submit button would otherwise be pressed (a version's Promote). */
      input.addEventListener("keydown", function (event) {
        if (event.key === "Enter") { event.preventDefault(); input.blur(); }
      });
      const node = k.el("div", { class: "kerasui-card", "data-item": item.id }, [
        // The thumbnail in the list; the original only when asked for.
        k.el("a", { href: item.image, target: "_blank", rel: "noopener", title: "open the original" },
             [k.el("img", { src: item.thumbnail, alt: item.label, loading: "lazy" })]),
        input, status]);
      let asking = null;
      async function save(label) {
        if (asking) { asking.remove(); asking = null; }
        input.value = label;
        status.textContent = "saving…";
        try {
          const saved = await k.api("/api/datasetitem/" + item.id + "/", { method: "PATCH", body: { label: label } });
          item.label = saved.label;
          input.value = saved.label;
          status.textContent = "✓ #" + item.id;
          await refreshSummary();
          node.classList.add("saved");
        } catch (error) { status.textContent = "✗ " + error.message; input.value = item.label; }
      }
      /* A label no image has yet is asked about first: a typo ("cirlce") would otherwise make a new class. */
      function ask(label) {
        if (asking) asking.remove();
        const near = closest(label, JSON.parse(root.dataset.labels || "[]"));
        const cancel = k.el("button", { type: "button", class: "button", text: "Cancel",
                                        onclick: function () { asking.remove(); asking = null; input.value = item.label; } });
        asking = k.el("div", { class: "kerasui-new-label", role: "alertdialog" }, [
          k.el("span", { text: "'" + label + "' is a new label." + (near ? " Did you mean '" + near + "'?" : "") }),
          near ? k.el("button", { type: "button", class: "button default", text: "Use '" + near + "'",
                                  onclick: function () { save(near); } }) : null,
          k.el("button", { type: "button", class: "button" + (near ? "" : " default"), text: "Create '" + label + "'",
                           onclick: function () { save(label); } }),
          cancel]);
        node.append(asking);
      }
      input.addEventListener("change", function () {
        const label = input.value.trim();
        if (!label || label === item.label) { input.value = item.label; return; }
        if (JSON.parse(root.dataset.labels || "[]").includes(label)) save(label);
        else ask(label);
      });
      return node;
    }

    async function show() {
      const params = new URLSearchParams({ dataset: dataset, page: page, page_size: pageSize, ordering: sort.value });
      if (filter.value) params.set("label", filter.value);
      let data;
      try { data = await k.api("/api/datasetitem/?" + params); } catch (error) {
        cards.replaceChildren(k.el("p", { class: "kerasui-error", text: error.message }));
        return;
      }
      cards.replaceChildren(...data.results.map(card));
      const all = root.querySelector("[data-all-images]");
      if (all && !filter.value) {  // the count follows uploads (it was the count when the page was made)
        all.textContent = "All " + data.count + (data.count === 1 ? " image" : " images") + " in the list";
        all.parentNode.hidden = !data.count;
      }
      const pages = Math.max(1, Math.ceil(data.count / pageSize));
      pager.replaceChildren(
        k.el("button", { type: "button", class: "button", disabled: page <= 1, text: "‹ Previous",
                         onclick: function () { page -= 1; show(); } }),
        k.el("span", { text: " page " + page + " of " + pages + " · " + data.count + (data.count === 1 ? " image " : " images ") }),
        k.el("button", { type: "button", class: "button", disabled: page >= pages, text: "Next ›",
                         onclick: function () { page += 1; show(); } }));
    }
    labels();
    root.addEventListener("kerasui:labels", labels);
    filter.addEventListener("change", function () { page = 1; show(); });
    sort.addEventListener("change", function () { page = 1; show(); });
    refreshGallery = function () { page = 1; return show(); };
    return show();
  }

  /* Train trains the saved options. With unsaved edits on the page (a new starting point, another size…)
     it asks first: save them and train those, or train the saved options. */
  function trainGuard(button, form) {
    function fields() {
      if (window.kerasuiEditor) window.kerasuiEditor.save();
      const parts = [];
      new FormData(form).forEach(function (value, name) {
        if (name !== "csrfmiddlewaretoken" && typeof value === "string") parts.push(name + "=" + value);
      });
      return parts.join("&");
    }
    const saved = fields();
    const ask = k.el("div", { class: "kerasui-train-ask", id: "kerasui-train-ask", role: "alertdialog", hidden: true });
    const save = k.el("button", { type: "button", class: "button default", text: "Save and train" });
    const old = k.el("button", { type: "button", class: "button", text: "Train the saved options" });
    const cancel = k.el("button", { type: "button", class: "button", text: "Cancel" });
    ask.append(k.el("p", { text: "The options on this page have changes that are not saved. Train uses the saved options unless you save these first." }),
               k.el("div", { class: "kerasui-row" }, [save, old, cancel]));
    button.closest(".kerasui-model-head").after(ask);
    button.addEventListener("click", function (event) {
      if (fields() === saved) return;  // kerasui.js submits the Train form
      event.preventDefault();
      event.stopPropagation();
      ask.hidden = false;
      save.focus();
    });
    save.addEventListener("click", function () {
      fields();
      form.append(k.el("input", { type: "hidden", name: "_train", value: "1" }));
      form.submit();
    });
    old.addEventListener("click", function () { document.getElementById(button.dataset.submitForm).submit(); });
    cancel.addEventListener("click", function () { ask.hidden = true; });
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (!k) return;
    const train = document.getElementById("train-button"), form = document.getElementById("dataset_form");
    if (train && form) trainGuard(train, form);
    const pictures = document.getElementById("kerasui-gallery");
    if (pictures && pictures.querySelector("select[data-filter]")) gallery(pictures);
    const up = document.getElementById("kerasui-upload");
    if (up) uploader(up);
    // A picture from the camera (camera.js) went through the upload: the counts and the gallery follow.
    document.addEventListener("kerasui:camera-picture", function () { refreshSummary(); refreshGallery(); });
    followImports();
  });
})();
