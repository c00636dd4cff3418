// Audit browser (auditors): chain status, search with filters, record detail, disclosures.
import { $, api, el, fmtTime, onSubmit, say } from "./common.js";

const OUTCOMES = { 0: "success", 4: "minor failure", 8: "serious failure", 12: "major failure" };
let lastQuery = null;

async function verify() {
  const out = $("#chain-status");
  out.className = "muted";
  out.textContent = "Checking the hash chain…";
  try {
    const r = await api("GET", "/ui/api/audit/verify");
    out.replaceChildren(
      el("span", { class: r.ok ? "badge ok" : "badge bad", id: "chain-badge" }, r.ok ? "verified" : "BROKEN"),
      ` ${r.checked} records checked` + (r.checkpoints_checked ? `, ${r.checkpoints_checked} signed checkpoints` : "") +
      (r.ok ? "." : ` — first bad record #${r.first_bad_seq}: ${r.reason}`),
    );
  } catch (err) {
    say(out, err.message);
  }
}

function toUtc(local) {
  return local ? new Date(local + "Z").toISOString() : "";
}

function row(r) {
  const tr = el("tr", { class: "selectable", tabindex: "0", dataset: { seq: r.seq } },
    el("td", {}, String(r.seq)), el("td", {}, fmtTime(r.time)),
    el("td", {}, r.security_alert ? el("span", { class: "badge alert" }, r.event) : r.event,
      r.break_glass ? el("span", { class: "badge alert" }, "break-the-glass") : null),
    el("td", {}, r.action), el("td", {}, OUTCOMES[r.outcome] || String(r.outcome)),
    el("td", { class: "mono" }, r.user_name || r.user || ""), el("td", {}, r.address || ""),
    el("td", {}, r.door), el("td", {}, r.description || r.types.join(", ")));
  const open = () => detail(r.seq);
  tr.addEventListener("click", open);
  tr.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); open(); } });
  return tr;
}

async function detail(seq) {
  const card = $("#detail-card");
  card.hidden = false;
  $("#detail-title").textContent = `Record #${seq}`;
  try {
    const r = await api("GET", `/ui/api/audit/records/${encodeURIComponent(seq)}`);
    $("#detail").textContent = JSON.stringify(r.detail, null, 2);
  } catch (err) {
    $("#detail").textContent = err.message;
  }
  $("#detail").focus();
}

async function search(query, append) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== "" && v !== null && v !== undefined) params.set(k, v);
  const r = await api("GET", `/ui/api/audit/records?${params}`);
  const body = $("#records tbody");
  if (!append) body.replaceChildren();
  body.append(...r.records.map(row));
  if (!r.records.length && !append) body.append(el("tr", {}, el("td", { colspan: "9", class: "muted" }, "No matching records.")));
  const more = $("#more");
  more.hidden = r.next_after === null;
  lastQuery = { ...query, after: r.next_after };
}

onSubmit($("#audit-search"), $("#search-error"), async (f) => {
  await search({ since: toUtc(f.since), until: toUtc(f.until), user: f.user.trim(), event: f.event,
    outcome: f.outcome, study: f.study.trim(), limit: 100 }, false);
});
$("#more").addEventListener("click", async () => {
  try { await search(lastQuery, true); } catch (err) { say($("#search-error"), err.message); }
});
$("#verify").addEventListener("click", verify);

onSubmit($("#disclosures"), $("#disc-error"), async (f) => {
  const r = await api("POST", "/ui/api/audit/disclosures", { patient_id: f.patient_id.trim() });
  const table = $("#disc-table");
  const body = $("tbody", table);
  body.replaceChildren(...r.disclosures.map((d) => el("tr", {},
    el("td", {}, String(d.seq)), el("td", {}, fmtTime(d.time)), el("td", {}, d.event), el("td", {}, d.action),
    el("td", { class: "mono" }, d.user_id), el("td", {}, d.user_role || ""), el("td", {}, d.door),
    el("td", { class: "mono" }, d.studies.join(" ")), el("td", {}, d.destination || ""), el("td", {}, d.reason || ""))));
  if (!r.disclosures.length) body.append(el("tr", {}, el("td", { colspan: "10", class: "muted" },
    r.patients ? "No disclosures recorded for this patient." : "No patient with this ID.")));
  table.hidden = false;
});

verify();
search({ limit: 100 }, false).catch((err) => say($("#search-error"), err.message));
