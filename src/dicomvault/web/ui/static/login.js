// Login: password → (new password) → (MFA enrolment with QR + recovery codes | TOTP) → session.
import { $, api, el, onSubmit, say } from "./common.js";

const forms = ["#password-form", "#mfa-form", "#change-form", "#enrol-form", "#recovery"];
const next = $("#password-form").dataset.next || "/ui/";
const error = $("#login-error");
let challenge = null;

function show(which) {
  for (const f of forms) $(f).hidden = f !== which;
  const first = $(which).querySelector("input, button");
  if (first) first.focus();
}

function done() {
  location.assign(next);
}

async function step(r) {
  if (r.status === "ok") {
    if (r.recovery_codes) {
      $("#recovery-codes").replaceChildren(...r.recovery_codes.map((c) => el("li", {}, c)));
      show("#recovery");
      return;
    }
    done();
    return;
  }
  challenge = r.challenge;
  if (r.status === "mfa_required") show("#mfa-form");
  else if (r.status === "password_change_required") show("#change-form");
  else if (r.status === "mfa_enrolment_required") {
    const e = await api("POST", "/api/auth/mfa/enrol", { challenge }, { redirectOn401: false });
    $("#qr").src = `data:image/png;base64,${e.qr_png_base64}`;
    $("#secret").textContent = e.secret;
    show("#enrol-form");
  } else {
    say(error, "Unexpected answer from the server; please try again.");
  }
}

function restart(err) {
  if (err.status === 401 && challenge && /expired|challenge/i.test(err.message)) {
    challenge = null;
    show("#password-form");
  }
  throw err;
}

const quiet = { redirectOn401: false };
onSubmit($("#password-form"), error, async (f) => {
  if ($("#reason")) $("#reason").hidden = true;
  await step(await api("POST", "/api/auth/login", { username: f.username.trim(), password: f.password }, quiet));
});
onSubmit($("#mfa-form"), error, async (f, form) => {
  try {
    await step(await api("POST", "/api/auth/mfa", { challenge, code: f.code.replace(/\s+/g, "") }, quiet));
  } catch (err) {
    form.reset();
    restart(err);
  }
});
onSubmit($("#change-form"), error, async (f) => {
  if (f.new_password !== f.repeat) throw new Error("The two passwords differ.");
  await step(await api("POST", "/api/auth/password/initial", { challenge, new_password: f.new_password }, quiet));
});
onSubmit($("#enrol-form"), error, async (f, form) => {
  try {
    await step(await api("POST", "/api/auth/mfa/enrol/confirm", { challenge, code: f.code.replace(/\s+/g, "") }, quiet));
  } catch (err) {
    form.reset();
    restart(err);
  }
});
$("#recovery-done").addEventListener("click", done);
if (!$("#reason").textContent.trim()) $("#reason").hidden = true;
