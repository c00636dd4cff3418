// Admin console: users (create, disable, reset MFA, roles), care teams, tokens, DICOM peers.
import { $, api, el, onSubmit, say } from "./common.js";

let roleNames = [];
const enc = encodeURIComponent;

function roleBoxes(container, selected, prefix) {
  container.replaceChildren(container.querySelector("legend") || "", ...roleNames.map((r) =>
    el("label", { class: "inline" },
      el("input", { type: "checkbox", name: "roles", value: r, id: `${prefix}-${r}`, checked: selected.includes(r) }), ` ${r} `)));
}

async function loadUsers() {
  const users = await api("GET", "/api/admin/users");
  const body = $("#users tbody");
  body.replaceChildren(...users.map((u) => {
    const roles = el("td", {}, u.roles.join(", "));
    const edit = el("button", { type: "button", class: "secondary", "aria-label": `Edit roles of ${u.username}` }, "Roles");
    edit.addEventListener("click", () => editRoles(u, roles));
    const toggle = el("button", { type: "button", class: u.enabled ? "danger" : "secondary" }, u.enabled ? "Disable" : "Enable");
    toggle.addEventListener("click", () => act(() => api("PATCH", `/api/admin/users/${enc(u.username)}`, { enabled: !u.enabled })));
    const reset = el("button", { type: "button", class: "secondary", disabled: !u.mfa_enabled }, "Reset MFA");
    reset.addEventListener("click", () => {
      if (confirm(`Reset two-factor sign-in for ${u.username}? They will enrol again at next sign-in.`)) {
        act(() => api("POST", `/api/admin/users/${enc(u.username)}/mfa/reset`, {}));
      }
    });
    return el("tr", { dataset: { user: u.username } }, el("td", { class: "mono" }, u.username), el("td", {}, u.display_name),
      roles, el("td", {}, el("span", { class: u.enabled ? "badge ok" : "badge bad" }, u.enabled ? "enabled" : "disabled")),
      el("td", {}, u.mfa_enabled ? "on" : u.sso ? "SSO" : "off"), el("td", { class: "row" }, edit, toggle, reset));
  }));
}

function editRoles(u, cell) {
  const set = el("fieldset", {}, el("legend", {}, `Roles of ${u.username}`));
  roleBoxes(set, u.roles, `r-${u.username}`);
  const save = el("button", { type: "submit" }, "Save roles");
  const form = el("form", {}, set, save);
  onSubmit(form, $("#users-error"), async () => {
    const roles = Array.from(form.querySelectorAll('input[name="roles"]:checked')).map((i) => i.value);
    await api("PUT", `/api/admin/users/${enc(u.username)}/roles`, { roles });
    await loadUsers();
  });
  cell.replaceChildren(form);
  set.querySelector("input")?.focus();
}

async function act(fn) {
  say($("#users-error"), "");
  try { await fn(); await loadUsers(); } catch (err) { say($("#users-error"), err.message); }
}

onSubmit($("#create-user"), $("#create-result"), async (f, form) => {
  const roles = Array.from(form.querySelectorAll('input[name="roles"]:checked')).map((i) => i.value);
  if (!roles.length) throw new Error("Choose at least one role.");
  const r = await api("POST", "/api/admin/users", { username: f.username.trim(), display_name: f.display_name, roles, invite: !!f.invite });
  say($("#create-result"), r.one_time_password
    ? `Created ${r.username}. One-time password (shown once, to be changed at first sign-in): ${r.one_time_password}`
    : `Created ${r.username}. Invite token (shown once, valid 72 h): ${r.invite_token}`, "success");
  form.reset();
  await loadUsers();
});

let careOp = "PUT";
$("#ct-remove").addEventListener("click", () => { careOp = "DELETE"; $("#care-team").requestSubmit(); });
onSubmit($("#care-team"), $("#care-result"), async (f) => {
  const op = careOp;
  careOp = "PUT";
  await api(op, `/api/admin/users/${enc(f.user.trim())}/assignments/${enc(f.study.trim())}`, op === "PUT" ? {} : undefined);
  say($("#care-result"), op === "PUT" ? "Added to the care team." : "Removed from the care team.", "success");
});

onSubmit($("#revoke-token"), $("#token-result"), async (f, form) => {
  await api("DELETE", `/api/admin/tokens/${enc(f.token_id.trim())}`);
  say($("#token-result"), "Token revoked.", "success");
  form.reset();
});
onSubmit($("#create-client"), $("#client-result"), async (f, form) => {
  const r = await api("POST", "/api/admin/oauth-clients", { name: f.name, roles: [f.role] });
  say($("#client-result"), `Client id: ${r.client_id} — secret (shown once): ${r.client_secret}`, "success");
  form.reset();
});

async function loadPeers() {
  const peers = await api("GET", "/api/admin/peers");
  const body = $("#peers tbody");
  body.replaceChildren(...peers.map((p) => {
    const del = el("button", { type: "button", class: "danger", "aria-label": `Remove ${p.ae_title}` }, "Remove");
    del.addEventListener("click", async () => {
      if (!confirm(`Remove DICOM peer ${p.ae_title}?`)) return;
      try { await api("DELETE", `/api/admin/peers/${enc(p.ae_title)}`); await loadPeers(); } catch (err) { say($("#peers-error"), err.message); }
    });
    return el("tr", {}, el("td", { class: "mono" }, p.ae_title), el("td", {}, p.host), el("td", {}, String(p.port || "")),
      el("td", {}, p.tls ? "yes" : "no"), el("td", {}, p.services.join(", ")), el("td", {}, p.role), el("td", {}, del));
  }));
  if (!peers.length) body.append(el("tr", {}, el("td", { colspan: "7", class: "muted" }, "No peers configured.")));
}
onSubmit($("#add-peer"), $("#peer-result"), async (f, form) => {
  await api("PUT", `/api/admin/peers/${enc(f.ae_title.trim())}`, { host: f.host.trim(), port: Number(f.port || 0), tls: !!f.tls, role: f.role });
  say($("#peer-result"), `Peer ${f.ae_title.trim()} saved.`, "success");
  form.reset();
  await loadPeers();
});

async function init() {
  try {
    roleNames = Object.keys(await api("GET", "/api/admin/roles"));
  } catch {
    roleNames = ["admin", "auditor", "patient", "privacy-officer", "radiologist", "referring", "researcher", "service", "technologist"];
  }
  roleBoxes($("#cu-roles"), [], "cu");
  for (const sel of [$("#cc-role"), $("#p-role")]) {
    sel.replaceChildren(...roleNames.map((r) => el("option", { value: r, selected: r === "service" }, r)));
  }
  await Promise.all([
    loadUsers().catch((err) => say($("#users-error"), err.message)),
    loadPeers().catch((err) => say($("#peers-error"), err.message)),
  ]);
}
init();
