// Break the glass: state a reason, get time-boxed access, open the study in OHIF.
import { $, api, el, fmtTime, onSubmit } from "./common.js";

const viewerUrl = (uid) => `/viewer/viewer?StudyInstanceUIDs=${encodeURIComponent(uid)}`;

async function listActive() {
  const info = await api("GET", "/ui/api/session");
  const list = $("#bg-active");
  if (!info.break_glass.length) {
    list.replaceChildren(el("li", { class: "muted" }, "None."));
    return;
  }
  list.replaceChildren(...info.break_glass.map((g) => el("li", {},
    el("a", { href: viewerUrl(g.study_uid), class: "mono" }, g.study_uid), ` until ${fmtTime(g.until)}`)));
}

onSubmit($("#bg-form"), $("#bg-error"), async (f) => {
  const r = await api("POST", "/api/auth/break-glass", { study_uid: f.study_uid.trim(), reason: f.reason });
  $("#bg-granted").hidden = false;
  $("#bg-granted-text").textContent = `Emergency access to study ${r.study_uid} until ${fmtTime(r.expires_at)}.`;
  $("#bg-open").href = viewerUrl(r.study_uid);
  $("#bg-open").focus();
  await listActive();
});

listActive().catch(() => {});
