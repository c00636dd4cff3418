// dicomvault boot script for OHIF (replaces OHIF's inline scripts so a strict CSP holds).
// Runs before app-config.js and the app bundle.
console.time("scriptToView");
window.PUBLIC_URL = "/viewer/";
window.browserImportFunction = function browserImportFunction(n) { return import(n); };

// Session watchdog: OHIF's DICOMweb calls keep the session alive; a 401 or the idle
// timeout returns to the login page (clean automatic logoff).
(function watch() {
  let api = null;
  const pending = [];
  const onStatus = (status) => {
    if (!api) { pending.push(status); return; }
    if (status === 401) api.expire("session-idle"); else if (status > 0 && status < 400) api.touch();
  };
  const sameOrigin = (url) => {
    try { return new URL(url, location.href).origin === location.origin; } catch { return false; }
  };
  const open = XMLHttpRequest.prototype.open;
  XMLHttpRequest.prototype.open = function patchedOpen(method, url, ...rest) {
    if (sameOrigin(url)) this.addEventListener("loadend", () => onStatus(this.status));
    return open.call(this, method, url, ...rest);
  };
  const originalFetch = window.fetch;
  window.fetch = async function patchedFetch(input, init) {
    const response = await originalFetch(input, init);
    const url = typeof input === "string" ? input : input && input.url;
    if (url && sameOrigin(url)) onStatus(response.status);
    return response;
  };
  const start = async () => {
    const link = document.createElement("link");
    link.rel = "stylesheet";
    link.href = "/ui/static/viewer-overlay.css";
    document.head.append(link);
    const r = await originalFetch("/ui/api/session", { credentials: "same-origin", cache: "no-store" });
    if (r.status === 401) { location.assign("/ui/login?reason=session-idle"); return; }
    const info = await r.json();
    const mod = await import("/ui/static/watchdog.js");
    api = mod.startWatchdog(info.idle_seconds);
    pending.splice(0).forEach(onStatus);
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
