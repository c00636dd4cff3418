// Session-expiry watchdog (HIPAA 164.312(a)(2)(iii) automatic logoff, shown to the user).
// The server ends a session after `idleSeconds` without a request; this module counts the
// same interval from the last request the page made, warns before the end, offers to stay
// signed in, and returns to the login page when the time is up.

const LOGIN = "/ui/login";

export function loginUrl(reason) {
  const here = location.pathname + location.search;
  const params = new URLSearchParams({ next: here });
  if (reason) params.set("reason", reason);
  return `${LOGIN}?${params}`;
}

export function startWatchdog(idleSeconds, doc = document) {
  if (!idleSeconds || idleSeconds <= 0) return { touch() {}, expire() {} };
  const warnBefore = Math.min(120, Math.floor(idleSeconds / 2));
  let last = Date.now();
  let ended = false;
  let banner = doc.getElementById("session-warning");
  if (!banner) {
    banner = doc.createElement("div");
    banner.id = "session-warning";
    banner.className = "dv-session-warning";
    banner.setAttribute("role", "alert");
    banner.hidden = true;
    doc.body.prepend(banner);
  }
  const text = doc.createElement("span");
  const stay = doc.createElement("button");
  stay.type = "button";
  stay.textContent = "Stay signed in";
  stay.id = "stay-signed-in";
  banner.replaceChildren(text, stay);

  function touch() {
    if (ended) return;
    last = Date.now();
    banner.hidden = true;
  }
  function expire(reason = "session-idle") {
    if (ended) return;
    ended = true;
    location.assign(loginUrl(reason));
  }
  stay.addEventListener("click", async () => {
    try {
      const r = await fetch("/ui/api/session", { credentials: "same-origin", cache: "no-store" });
      if (r.ok) touch(); else expire("session-idle");
    } catch {
      text.textContent = "Network error: cannot reach the server. Your work may be lost.";
    }
  });
  setInterval(() => {
    if (ended) return;
    const left = Math.ceil(idleSeconds - (Date.now() - last) / 1000);
    if (left <= 0) {
      expire("session-idle");
    } else if (left <= warnBefore) {
      text.textContent = `Your session ends in ${left} s because of inactivity. `;
      if (banner.hidden) {
        banner.hidden = false;
        stay.focus({ preventScroll: true });
      }
    }
  }, 1000);
  return { touch, expire };
}
