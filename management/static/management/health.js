// Dataset → Health: while a check is queued or running, poll its API resource and show its progress;
// reload the page once it ends, so the findings appear. No inline script: the CSP forbids them.
(function () {
  "use strict";
  const status = document.getElementById("kerasui-health-status");
  if (!status || status.dataset.active !== "1" || !status.dataset.url) return;
  const state = document.getElementById("kerasui-health-state");
  const phase = document.getElementById("kerasui-health-phase");
  const bar = document.getElementById("kerasui-health-progress");
  const labels = { queued: "Queued", running: "Running", succeeded: "Done", failed: "Failed", cancelled: "Cancelled" };
  // The phases in words, as HealthCheck.phase_title says them (management/models.py).
  const phases = {
    hashing: "looking for duplicates", decoding: "reading the images",
    features: "computing what each image looks like", labels: "checking the labels", report: "writing the report",
  };

  async function poll() {
    let check;
    try {
      const response = await fetch(status.dataset.url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(String(response.status));
      check = await response.json();
    } catch (error) {
      setTimeout(poll, 5000);
      return;
    }
    state.textContent = labels[check.status] || check.status;
    phase.textContent = phases[check.phase] || check.phase || "";
    bar.value = check.progress;
    if (check.status === "queued" || check.status === "running") {
      setTimeout(poll, 1500);
    } else {
      location.reload();
    }
  }
  setTimeout(poll, 1000);
})();
