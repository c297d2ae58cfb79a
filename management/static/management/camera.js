// The camera, one component for every page that has one (the labelling page, the dataset page, the Test page):
// getUserMedia into a <video>, a frame as a JPEG, and the capture box (management/camera.html) that adds each
// picture into the chosen label through the same upload as any image (POST /api/datasetitem/, every check).
// A page follows the pictures through the "kerasui:camera-picture" event (detail: the new item). No inline
// script: the CSP forbids them.
(function () {
  "use strict";

  async function start(video) {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error("this browser gives no camera here (it needs https or localhost)");
    }
    try {
      video.srcObject = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
    } catch (error) {
      throw new Error(`no camera: ${error.message || error.name}`);
    }
    video.hidden = false;
    // A frame painted, so that a picture taken at once is not black (at most a second's wait).
    await video.play().catch(() => {});
    const painted = new Promise((resolve) => {
      if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(() => resolve());
      else video.addEventListener("loadeddata", resolve, { once: true });
    });
    await Promise.race([painted, new Promise((resolve) => setTimeout(resolve, 1000))]);
  }

  function stop(video) {
    if (video.srcObject) video.srcObject.getTracks().forEach((track) => track.stop());
    video.srcObject = null;
    video.hidden = true;
  }

  function frame(video) {
    const canvas = document.createElement("canvas");
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.9));
  }

  function csrf() {
    const match = document.cookie.match(/(?:^|; )csrftoken=([^;]*)/);
    const input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return match ? decodeURIComponent(match[1]) : input ? input.value : "";
  }

  function captureBox(box) {
    const $ = (name) => box.querySelector(`[data-camera-${name}]`);
    const video = $("video"), select = $("label"), shoot = $("shoot"), status = $("status"), error = $("error");
    let taken = 0;
    function fail(problem) { error.hidden = false; error.textContent = String(problem.message || problem); }
    $("start").addEventListener("click", async () => {
      try { await start(video); } catch (problem) { fail(problem); return; }
      error.hidden = true;
      shoot.disabled = false;
    });
    shoot.addEventListener("click", async () => {
      const form = new FormData();
      form.append("dataset", box.dataset.dataset);
      form.append("label", select.value);
      form.append("image", await frame(video), `camera-${Date.now()}.jpg`);
      try {
        const response = await fetch(box.dataset.add, { method: "POST", body: form, credentials: "same-origin",
          headers: { Accept: "application/json", "X-CSRFToken": csrf() } });
        const item = await response.json().catch(() => null);
        if (!response.ok) {
          const first = item && typeof item === "object" ? Object.values(item)[0] : null;
          throw new Error((Array.isArray(first) ? first[0] : first) || `${response.status} ${response.statusText}`);
        }
        taken += 1;
        status.textContent = `${taken} taken (image ${item.id})`;
        error.hidden = true;
        box.dispatchEvent(new CustomEvent("kerasui:camera-picture", { detail: item, bubbles: true }));
      } catch (problem) { fail(problem); }
    });
  }

  document.querySelectorAll("[data-kerasui-camera]").forEach(captureBox);
  window.kerasuiCamera = { start: start, stop: stop, frame: frame };
})();
