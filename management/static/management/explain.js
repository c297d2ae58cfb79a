/* "why?" on an image card (a run's misclassified images, a confusion cell's images): the heatmap of what
   the model looked at replaces the image, and back. The server makes it on the first request, then keeps it.
   Delegated from the document, so cards added to the page later work too; no inline handlers (CSP). */
(function () {
  "use strict";

  async function heatmapOf(button) {
    const response = await fetch(button.dataset.explain, { credentials: "same-origin", headers: { Accept: "image/png" } });
    if (!response.ok) {
      const text = (await response.text()).slice(0, 200);
      throw new Error(text || response.status + " " + response.statusText);
    }
    return URL.createObjectURL(await response.blob());
  }

  async function toggle(button) {
    const card = button.closest(".kerasui-card") || button.parentElement;
    const image = card.querySelector("img:not(.kerasui-why-heatmap)");
    const status = card.querySelector(".kerasui-why-status") || card.appendChild(Object.assign(document.createElement("span"), { className: "kerasui-why-status kerasui-muted" }));
    let heatmap = card.querySelector("img.kerasui-why-heatmap");
    const showing = button.getAttribute("aria-pressed") === "true";
    if (showing) {
      if (heatmap) heatmap.hidden = true;
      if (image) image.hidden = false;
      button.setAttribute("aria-pressed", "false");
      status.textContent = "";
      return;
    }
    if (!heatmap) {
      button.disabled = true;
      status.textContent = "looking…";
      try {
        heatmap = document.createElement("img");
        heatmap.className = "kerasui-why-heatmap";
        heatmap.alt = button.title || "what the model looked at";
        heatmap.src = await heatmapOf(button);
        (image || button).insertAdjacentElement(image ? "afterend" : "beforebegin", heatmap);
      } catch (error) {
        heatmap = null;
        status.textContent = "cannot explain: " + error.message;
        return;
      } finally {
        button.disabled = false;
      }
    }
    heatmap.hidden = false;
    if (image) image.hidden = true;
    button.setAttribute("aria-pressed", "true");
    status.textContent = "red: what mattered most";
  }

  document.addEventListener("click", function (event) {
    const button = event.target.closest ? event.target.closest("button.kerasui-why[data-explain]") : null;
    if (!button) return;
    event.preventDefault();
    toggle(button);
  });
})();
