// Account: password change, personal API tokens, sign out everywhere.
import { $, api, el, fmtTime, onSubmit, say } from "./common.js";

const SCOPES = ["study:search", "study:read", "study:write", "study:export"];

onSubmit($("#password-change"), $("#pw-result"), async (f) => {
  if (f.new_password !== f.repeat) throw new Error("The two new passwords differ.");
  await api("POST", "/api/auth/password", { current_password: f.current_password, new_password: f.new_password },
    { redirectOn401: false });
  location.assign("/ui/login?reason=password-changed");
});

$("#tk-scopes").append(...SCOPES.map((s) => el("label", {},
  el("input", { type: "checkbox", name: "scopes", value: s, checked: s === "study:search" || s === "study:read" }), ` ${s} `)));

function addRow(t) {
  const table = $("#tokens");
  table.hidden = false;
  const revoke = el("button", { type: "button", class: "danger" }, "Revoke");
  const tr = el("tr", {}, el("td", { class: "mono" }, t.token_id), el("td", {}, t.scopes.join(", ")),
    el("td", {}, fmtTime(t.expires_at)), el("td", {}, revoke));
  revoke.addEventListener("click", async () => {
    try {
      await api("DELETE", `/api/auth/tokens/${encodeURIComponent(t.token_id)}`);
      tr.remove();
      say($("#token-result"), "Token revoked.", "success");
    } catch (err) { say($("#token-result"), err.message); }
  });
  $("#tokens tbody").append(tr);
}

onSubmit($("#token-create"), $("#token-created"), async (f, form) => {
  const scopes = Array.from(form.querySelectorAll('input[name="scopes"]:checked')).map((i) => i.value);
  if (!scopes.length) throw new Error("Choose at least one permission.");
  const t = await api("POST", "/api/auth/tokens", { name: f.name, scopes, days: Number(f.days || 90) });
  say($("#token-created"), `New token (copy it now, it is shown once): ${t.token}`, "success");
  addRow(t);
  form.reset();
});

onSubmit($("#token-revoke"), $("#token-result"), async (f, form) => {
  await api("DELETE", `/api/auth/tokens/${encodeURIComponent(f.token_id.trim())}`);
  say($("#token-result"), "Token revoked.", "success");
  form.reset();
});

$("#logout-everywhere").addEventListener("click", async () => {
  try { await api("POST", "/api/auth/logout-everywhere", {}, { redirectOn401: false }); } catch { /* signed out */ }
  location.assign("/ui/login?reason=logged-out");
});
