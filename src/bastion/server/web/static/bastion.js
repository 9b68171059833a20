// Bastion dashboard: refresh a run's live region while the run is active.
// No inline script anywhere (the CSP forbids it); fragments are server-rendered and escaped.
"use strict";

const POLL_MS = 2000;

function poll(region) {
  if (region.dataset.final === "true") return;
  window.setTimeout(async () => {
    try {
      const response = await fetch(region.dataset.poll, { credentials: "same-origin" });
      if (!response.ok) { poll(region); return; }
      const doc = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = doc.getElementById(region.id);
      if (fresh === null) { poll(region); return; }
      const log = region.querySelector("pre.log");
      const atBottom = log !== null && log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      region.replaceWith(fresh);
      const freshLog = fresh.querySelector("pre.log");
      if (atBottom && freshLog !== null) freshLog.scrollTop = freshLog.scrollHeight;
      poll(fresh);
    } catch (error) {
      poll(region);
    }
  }, POLL_MS);
}

document.querySelectorAll("[data-poll]").forEach(poll);
