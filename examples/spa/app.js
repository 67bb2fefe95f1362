// The example SPA: every flow of authvault's cookie session, in plain DOM code.
import { API_BASE } from "./config.js";
import { createClient, readEvents, toError } from "./api.js";
import * as webauthn from "./webauthn.js";

const page = new URL(location.href);
const apiParam = page.searchParams.get("api");
const api = createClient((apiParam || API_BASE).replace(/\/+$/, ""));

// The SPA's own URL, where GitHub sign-in and reset links come back to (keeping ?api=).
const self = new URL(page.origin + page.pathname);
if (apiParam) self.searchParams.set("api", apiParam);

const $ = (id) => document.querySelector(`[data-testid="${id}"]`);
const KEY_NAMES = { togetherAI: "Together AI", codeRabbit: "CodeRabbit", oumi: "Oumi", kestra: "Kestra" };

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

// The pending second sign-in step's token: in memory only, like the CSRF token.
let mfaToken = null;

// GET /api/auth/providers: which ways to sign in this authvault offers (passkeys may be off).
let providers = {};
const passkeysOn = () => "passkey" in providers;

function show(view) {
  for (const v of ["signed-out", "signed-in", "reset-view", "mfa-step-view"]) $(v).hidden = v !== view;
  // A TOTP secret or recovery codes on the screen go when the account view does.
  if (view !== "signed-in") {
    endEnrolment();
    hideRecoveryCodes();
  }
}

// Runs a handler, showing any error in the status line.
function guarded(fn) {
  return async (event) => {
    event?.preventDefault();
    try {
      await fn(event);
    } catch (err) {
      status(err.code ? `${err.message} (${err.code})` : String(err.message || err), true);
    }
  };
}

function formValues(form) {
  return Object.fromEntries(new FormData(form));
}

async function loadSession() {
  const res = await api.raw("GET", "/api/auth/session");
  if (res.status === 401) {
    show("signed-out");
    return false;
  }
  if (!res.ok) throw await toError(res);
  const { user, expires } = await res.json();
  showUser(user);
  $("session-expires").textContent = new Date(expires).toLocaleString();
  show("signed-in");
  await Promise.all([loadKeys(), loadSessions(), loadPasskeys()]);
  return true;
}

function showUser(user) {
  $("session-name").textContent = user.name;
  $("session-email").textContent = user.email;
  $("session-providers").textContent = user.providers.join(", ");
  showMfaState(user.mfaEnabled);
}

async function loadKeys() {
  const { apiKeys } = await api.call("GET", "/api/user/api-keys");
  $("api-keys").replaceChildren(
    ...Object.entries(KEY_NAMES).map(([id, label]) => {
      const li = document.createElement("li");
      li.dataset.testid = `api-key-${id}`;
      li.textContent = `${label}: ${apiKeys[id] ? apiKeys[id].masked : "not set"}`;
      return li;
    }),
  );
}

async function loadSessions() {
  const { sessions } = await api.call("GET", "/api/user/sessions");
  $("sessions").replaceChildren(
    ...sessions.map((s) => {
      const tr = document.createElement("tr");
      tr.dataset.testid = "session-row";
      tr.dataset.sessionId = s.id;
      tr.className = s.current ? "current" : "";
      for (const text of [s.createdAt, s.lastUsedAt, s.userAgent ?? "?", s.ip ?? "?"]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.append(td);
      }
      const td = document.createElement("td");
      if (s.current) {
        td.textContent = "this browser";
      } else {
        const button = document.createElement("button");
        button.textContent = "End";
        button.dataset.testid = `session-end-${s.id}`;
        button.addEventListener("click", guarded(async () => {
          await api.call("DELETE", `/api/user/sessions/${encodeURIComponent(s.id)}`);
          status("Session ended.");
          await loadSessions();
        }));
        td.append(button);
      }
      tr.append(td);
      return tr;
    }),
  );
}

async function signedIn(verb) {
  await loadSession();
  status(`${verb} as ${$("session-email").textContent}.`);
}

// Two-factor sign-in: the panel on the account view.

function showMfaState(enabled) {
  $("mfa-state").textContent = enabled ? "on" : "off";
  $("mfa-off").hidden = enabled;
  $("mfa-on").hidden = !enabled;
  if (enabled) endEnrolment();
}

function endEnrolment() {
  $("mfa-enrolment").hidden = true;
  $("mfa-secret").textContent = "";
  $("mfa-qr").removeAttribute("src");
  $("mfa-confirm-form").reset();
}

function showRecoveryCodes(codes) {
  $("mfa-recovery-codes").replaceChildren(
    ...codes.map((code) => {
      const li = document.createElement("li");
      li.dataset.testid = "mfa-recovery-code";
      li.textContent = code;
      return li;
    }),
  );
  $("mfa-recovery").hidden = false;
}

function hideRecoveryCodes() {
  $("mfa-recovery").hidden = true;
  $("mfa-recovery-codes").replaceChildren();
}

$("mfa-enrol").addEventListener("click", guarded(async () => {
  const { secret, qrSvg } = await api.call("POST", "/api/user/mfa/totp");
  // The SVG goes in as an image, never as markup: an <img> runs no script and loads nothing.
  $("mfa-qr").src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(qrSvg)}`;
  // In groups of four for typing; authenticator apps ignore the spaces.
  $("mfa-secret").textContent = secret.replace(/(.{4})(?=.)/g, "$1 ");
  $("mfa-enrolment").hidden = false;
  $("mfa-confirm-code").focus();
  status("Scan the QR code with your authenticator app, then enter the code it shows.");
}));

$("mfa-enrol-cancel").addEventListener("click", () => {
  endEnrolment();
  status("Two-factor set-up cancelled.");
});

$("mfa-confirm-form").addEventListener("submit", guarded(async (e) => {
  const { code } = formValues(e.target);
  const { recoveryCodes } = await api.call("POST", "/api/user/mfa/totp/confirm", { code });
  showMfaState(true);
  showRecoveryCodes(recoveryCodes);
  status("Two-factor sign-in is on. Save your recovery codes.");
  await loadSessions(); // turning it on ended every other session
}));

$("mfa-recovery-done").addEventListener("click", () => {
  hideRecoveryCodes();
  status("Recovery codes hidden.");
});

$("mfa-regenerate-form").addEventListener("submit", guarded(async (e) => {
  const { code } = formValues(e.target);
  const { recoveryCodes } = await api.call("POST", "/api/user/mfa/recovery-codes", { code });
  e.target.reset();
  showRecoveryCodes(recoveryCodes);
  status("New recovery codes made; the old ones no longer work.");
}));

$("mfa-disable-form").addEventListener("submit", guarded(async (e) => {
  const { code } = formValues(e.target);
  await api.call("DELETE", "/api/user/mfa", { code });
  e.target.reset();
  hideRecoveryCodes();
  showMfaState(false);
  status("Two-factor sign-in is off.");
}));

// Two-factor sign-in: the second step, after a password or an OAuth provider.

function askSecondFactor(token) {
  mfaToken = token;
  $("mfa-step-form").reset();
  show("mfa-step-view");
  $("mfa-step-code").focus();
  status("Enter the code from your authenticator app.");
}

$("mfa-step-form").addEventListener("submit", guarded(async (e) => {
  const { code } = formValues(e.target);
  try {
    await api.call("POST", "/api/auth/mfa/verify", { mfaToken, code }, { auth: false });
  } catch (err) {
    e.target.reset();
    // Unknown, used, expired or spent by wrong codes: only a new first step helps.
    if (err.code === "invalid_mfa_token") {
      mfaToken = null;
      show("signed-out");
    }
    throw err;
  }
  mfaToken = null;
  e.target.reset();
  await signedIn("Signed in");
}));

$("mfa-step-cancel").addEventListener("click", () => {
  mfaToken = null;
  show("signed-out");
  status("Signed out.");
});

// Passkeys: the panel on the account view, and sign-in from the signed-out view.

const when = (timestamp) => (timestamp ? new Date(timestamp).toLocaleString() : "never");

function cell(text, testid) {
  const td = document.createElement("td");
  td.textContent = text;
  if (testid) td.dataset.testid = testid;
  return td;
}

function button(text, testid, type = "submit") {
  const b = document.createElement("button");
  b.type = type;
  b.textContent = text;
  b.dataset.testid = testid;
  return b;
}

async function loadPasskeys() {
  $("passkeys-panel").hidden = !passkeysOn();
  if (!passkeysOn()) return;
  const { passkeys } = await api.call("GET", "/api/user/passkeys");
  $("passkeys-none").hidden = passkeys.length > 0;
  $("passkeys").replaceChildren(
    ...passkeys.map((p) => {
      const tr = document.createElement("tr");
      tr.dataset.testid = "passkey-row";
      tr.dataset.passkeyId = p.id;
      const name = cell(p.name, "passkey-name");
      const created = cell(when(p.createdAt), "passkey-created");
      const used = cell(when(p.lastUsedAt), "passkey-last-used");
      created.title = p.createdAt;
      used.title = p.lastUsedAt ?? "";
      const actions = document.createElement("td");
      const rename = button("Rename", `passkey-rename-${p.id}`, "button");
      const remove = button("Remove", `passkey-remove-${p.id}`, "button");
      rename.addEventListener("click", () => renameForm(p, name));
      remove.addEventListener("click", guarded(() => removePasskey(p)));
      actions.append(rename, " ", remove);
      tr.append(name, created, used, actions);
      return tr;
    }),
  );
}

// The name cell becomes a small form until saved or cancelled.
function renameForm(passkey, td) {
  const form = document.createElement("form");
  form.dataset.testid = "passkey-rename-form";
  const input = document.createElement("input");
  input.name = "name";
  input.value = passkey.name;
  input.required = true;
  input.maxLength = 64;
  input.setAttribute("aria-label", "New name");
  input.dataset.testid = "passkey-rename-name";
  const cancel = button("Cancel", "passkey-rename-cancel", "button");
  form.append(input, button("Save", "passkey-rename-save"), " ", cancel);
  form.addEventListener("submit", guarded(async () => {
    const { name } = formValues(form);
    const id = encodeURIComponent(passkey.id);
    const renamed = await api.call("PATCH", `/api/user/passkeys/${id}`, { name });
    status(`Passkey renamed to ${renamed.name}.`);
    await loadPasskeys();
  }));
  cancel.addEventListener("click", () => td.replaceChildren(passkey.name));
  td.replaceChildren(form);
  input.select();
}

async function removePasskey(passkey) {
  try {
    await api.call("DELETE", `/api/user/passkeys/${encodeURIComponent(passkey.id)}`);
  } catch (err) {
    // authvault keeps a user's last way in; say which passkey and what to do about it.
    if (err.code === "last_sign_in_method") {
      const why = `Passkey ${passkey.name} is your only way left to sign in, so it stays: add another passkey first.`;
      throw Object.assign(new Error(why), { code: err.code });
    }
    throw err;
  }
  status(`Passkey ${passkey.name} removed.`);
  await passkeysChanged();
}

// User.providers gains or loses "passkey" with the first or last one.
async function passkeysChanged() {
  showUser(await api.call("GET", "/api/user"));
  await loadPasskeys();
}

// The browser's half of a ceremony, with the control disabled meanwhile (a second call while
// one is pending would be refused) and the browser's refusal put in words.
async function ceremony(what, control, rpId, run) {
  control.disabled = true;
  try {
    const credential = await run();
    if (!credential) throw new Error(`${what} failed: the browser returned no passkey.`);
    return credential;
  } catch (err) {
    const why = webauthn.refusal(err, rpId ?? location.hostname);
    throw why ? new Error(`${what} failed: ${why}.`) : err;
  } finally {
    control.disabled = false;
  }
}

$("passkey-add-form").addEventListener("submit", guarded(async (e) => {
  const { name } = formValues(e.target);
  // A sign-in over 10 minutes old answers reauth_required here, shown like the MFA panel's.
  const { flowId, publicKey } = await api.call("POST", "/api/user/passkeys/register/start", {});
  status("Follow your browser's prompt to create the passkey.");
  const credential = await ceremony("Adding a passkey", $("passkey-add"), publicKey.rp?.id, () =>
    navigator.credentials.create({ publicKey: webauthn.creationOptions(publicKey) }));
  const body = { flowId, credential: webauthn.credentialJSON(credential) };
  if (name.trim()) body.name = name.trim();
  const passkey = await api.call("POST", "/api/user/passkeys/register/finish", body);
  e.target.reset();
  status(`Passkey added: ${passkey.name}.`);
  await passkeysChanged();
}));

$("passkey-signin").addEventListener("click", guarded(async () => {
  const { flowId, publicKey } = await api.call("POST", "/api/auth/passkey/start", {}, { auth: false });
  status("Follow your browser's prompt to use a passkey.");
  const credential = await ceremony("Passkey sign-in", $("passkey-signin"), publicKey.rpId, () =>
    navigator.credentials.get({ publicKey: webauthn.requestOptions(publicKey) }));
  const answer = { flowId, credential: webauthn.credentialJSON(credential) };
  // A passkey is both factors: authvault asks no second step after it.
  await api.call("POST", "/api/auth/passkey/finish", answer, { auth: false });
  await signedIn("Signed in");
}));

$("signup-form").addEventListener("submit", guarded(async (e) => {
  const { name, email, password } = formValues(e.target);
  // The answer's session.accessToken is deliberately ignored: the HttpOnly cookie is the session.
  await api.call("POST", "/api/auth/signup", { name, email, password }, { auth: false });
  e.target.reset();
  await signedIn("Signed up");
}));

$("signin-form").addEventListener("submit", guarded(async (e) => {
  const { email, password } = formValues(e.target);
  const answer = await api.call("POST", "/api/auth/signin", { email, password }, { auth: false });
  e.target.reset();
  if (answer.mfaRequired) askSecondFactor(answer.mfaToken);
  else await signedIn("Signed in");
}));

$("forgot-form").addEventListener("submit", guarded(async (e) => {
  const { email } = formValues(e.target);
  await api.call("POST", "/api/auth/password/forgot", { email, redirectUrl: self.href }, { auth: false });
  status("If that address has an account, a reset link is on its way.");
}));

$("reset-form").addEventListener("submit", guarded(async (e) => {
  const { newPassword } = formValues(e.target);
  const token = page.searchParams.get("token");
  await api.call("POST", "/api/auth/password/reset", { token, newPassword }, { auth: false });
  e.target.reset();
  history.replaceState(null, "", self.href);
  show("signed-out");
  status("Password changed. Sign in with the new one.");
}));

$("session-reload").addEventListener("click", guarded(async () => {
  if (await loadSession()) status("Session reloaded.");
  else status("Signed out.");
}));

$("sessions-reload").addEventListener("click", guarded(loadSessions));

$("signout").addEventListener("click", guarded(async () => {
  await api.call("POST", "/api/auth/signout", {});
  show("signed-out");
  status("Signed out.");
}));

$("api-key-form").addEventListener("submit", guarded(async (e) => {
  const { provider, key } = formValues(e.target);
  await api.call("POST", "/api/user/api-keys", { [provider]: key });
  e.target.reset();
  await loadKeys();
  status(key ? `${KEY_NAMES[provider]} key saved.` : `${KEY_NAMES[provider]} key removed.`);
}));

$("generate-form").addEventListener("submit", guarded(async (e) => {
  const { prompt } = formValues(e.target);
  const out = $("generate-output");
  const line = $("generate-status");
  out.textContent = "";
  line.textContent = "Streaming…";
  const res = await api.raw("POST", "/api/generate", { prompt, stream: true });
  if (!res.ok) {
    line.textContent = "";
    throw await toError(res);
  }
  await readEvents(res, (event, data) => {
    if (event === "delta") out.textContent += data.content;
    else if (event === "done") {
      out.textContent = data.code;
      line.textContent = `Done: ${data.model}, ${data.usage.promptTokens} prompt + ${data.usage.completionTokens} completion tokens.`;
    } else if (event === "error") line.textContent = `Failed: ${data.code}${data.detail ? ` (${data.detail})` : ""}`;
  });
}));

async function start() {
  $("api-base").textContent = api.base;
  const github = new URL(`${api.base}/api/auth/signin/github`);
  github.searchParams.set("callbackUrl", self.href);
  $("github-signin").href = github.href;
  // Without the list the page still works, only without passkeys; loadSession reports an
  // authvault that cannot be reached.
  providers = await api.call("GET", "/api/auth/providers").catch(() => ({}));
  $("passkey-signin-line").hidden = !passkeysOn() || !webauthn.supported();
  $("passkey-add-form").hidden = !webauthn.supported();
  $("passkeys-unsupported").hidden = webauthn.supported();

  if (page.searchParams.has("token")) {
    show("reset-view");
    status("Choose a new password.");
    return;
  }
  // A provider sign-in of an account with two-factor sign-in comes back with ?mfaToken=.
  const token = page.searchParams.get("mfaToken");
  if (token) {
    history.replaceState(null, "", self.href);
    askSecondFactor(token);
    return;
  }
  const error = page.searchParams.get("error");
  if (await loadSession()) status(`Signed in as ${$("session-email").textContent}.`);
  else status(error ? `Sign-in failed: ${error}` : "Signed out.", Boolean(error));
  if (error) history.replaceState(null, "", self.href);
}

guarded(start)();
