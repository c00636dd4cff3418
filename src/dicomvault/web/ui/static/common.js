// Shared helpers for our pages: JSON calls with CSRF, clear errors, safe DOM building,
// sign-out and the session watchdog.  No innerHTML with data: text goes in as text.
import { loginUrl, startWatchdog } from "./watchdog.js";

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || "";
const idle = Number(document.body?.dataset.idleSeconds || 0);
export const watchdog = startWatchdog(idle);

export class ApiError extends Error {
  constructor(message, status, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Call one of our JSON APIs; 401 returns to login, other failures throw ApiError. */
export async function api(method, url, body, { redirectOn401 = true } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrf()) headers["X-CSRF-Token"] = csrf();
  let response;
  try {
    response = await fetch(url, {
      method, headers, credentials: "same-origin", cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError("Network error: the server cannot be reached. Check the connection and retry.", 0, "network");
  }
  let data = null;
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) data = await response.json().catch(() => null);
  if (response.ok) {
    watchdog.touch();
    return data;
  }
  const code = data?.code || "";
  if (response.status === 401 && redirectOn401 && idle > 0) {
    watchdog.expire(code || "session-ended");
  }
  const detail = data?.detail || data?.title || response.statusText;
  const prefix = response.status === 403 ? "Access denied: " : response.status === 401 ? "Not signed in: " : "";
  throw new ApiError(prefix + detail, response.status, code);
}

/** Build an element: el("td", {class: "x"}, "text", child). Strings become text nodes. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

/** Show a message in a status element (role=alert for errors). */
export function say(node, message, kind = "error") {
  if (!node) return;
  node.className = kind;
  node.setAttribute("role", kind === "error" ? "alert" : "status");
  node.textContent = message;
  node.hidden = !message;
}

export function formData(form) {
  return Object.fromEntries(new FormData(form).entries());
}

/** Run an async form handler with the submit button disabled and errors shown in `out`. */
export function onSubmit(form, out, handler) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector('button[type="submit"]');
    if (button) button.disabled = true;
    say(out, "");
    try {
      await handler(formData(form), form);
    } catch (err) {
      say(out, err.message || String(err));
    } finally {
      if (button) button.disabled = false;
    }
  });
}

export function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

const logout = document.getElementById("logout");
if (logout) {
  logout.addEventListener("click", async () => {
    try {
      await api("POST", "/api/auth/logout", {}, { redirectOn401: false });
    } catch { /* already signed out */ }
    location.assign("/ui/login?reason=logged-out");
  });
}
export { loginUrl };
