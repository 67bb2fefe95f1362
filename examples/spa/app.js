// The example SPA: every flow of authvault's cookie session, in plain DOM code.
import { API_BASE } from "./config.js";
import { createClient, readEvents, toError } from "./api.js";

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

function show(view) {
  for (const v of ["signed-out", "signed-in", "reset-view"]) $(v).hidden = v !== view;
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
  $("session-name").textContent = user.name;
  $("session-email").textContent = user.email;
  $("session-providers").textContent = user.providers.join(", ");
  $("session-expires").textContent = new Date(expires).toLocaleString();
  show("signed-in");
  await Promise.all([loadKeys(), loadSessions()]);
  return true;
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

$("signup-form").addEventListener("submit", guarded(async (e) => {
  const { name, email, password } = formValues(e.target);
  // The answer's session.accessToken is deliberately ignored: the HttpOnly cookie is the session.
  await api.call("POST", "/api/auth/signup", { name, email, password }, { auth: false });
  e.target.reset();
  await signedIn("Signed up");
}));

$("signin-form").addEventListener("submit", guarded(async (e) => {
  const { email, password } = formValues(e.target);
  await api.call("POST", "/api/auth/signin", { email, password }, { auth: false });
  e.target.reset();
  await signedIn("Signed in");
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

  if (page.searchParams.has("token")) {
    show("reset-view");
    status("Choose a new password.");
    return;
  }
  const error = page.searchParams.get("error");
  if (await loadSession()) status(`Signed in as ${$("session-email").textContent}.`);
  else status(error ? `Sign-in failed: ${error}` : "Signed out.", Boolean(error));
  if (error) history.replaceState(null, "", self.href);
}

guarded(start)();
