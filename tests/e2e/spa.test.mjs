// The example SPA (examples/spa) end to end in headless Chromium.
//
// Starts, each on 127.0.0.1 and a port of its own:
//   authvault   $AUTHVAULT_BIN (default target/debug/authvault) on the embedded store in a temp
//               dir, plain-http cookies, no SMTP (mail lands in <data dir>/outbox/*.eml), its
//               public URL on localhost so that passkeys are on (RP ID localhost);
//   fake GitHub OAuth 2.0 + REST in GitHub's wire format (checks client credentials,
//               redirect_uri, single-use codes and the PKCE S256 verifier);
//   fake Together AI  POST /v1/chat/completions, streamed as OpenAI-style SSE chunks;
//   the SPA     examples/spa/ from a static server (an origin on the CORS list);
//   a foreign   page origin that is NOT on the CORS list;
// the browser reaches authvault, the SPA and the foreign page as http://localhost:PORT: a domain
// name (a WebAuthn RP ID cannot be an IP address) and a secure context over plain http. Passkeys
// are made and used by a virtual authenticator over the Chrome DevTools Protocol.
// Then drives the SPA through every flow, asserting on what the page shows, with a screenshot
// per step and authvault's log in $AUTHVAULT_BROWSER_OUT (default tests/e2e/out/). Chromium:
// $AUTHVAULT_BROWSER_CHROMIUM, default /usr/bin/chromium; if it cannot start, every test fails.
//
//   AUTHVAULT_BIN=target/debug/authvault node --test tests/e2e/spa.test.mjs

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash, createHmac, randomBytes } from "node:crypto";
import dns from "node:dns";
import { createReadStream, openSync, closeSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat } from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const SPA_DIR = path.join(root, "examples/spa");
const BIN = path.resolve(root, process.env.AUTHVAULT_BIN || "target/debug/authvault");
const OUT = path.resolve(process.env.AUTHVAULT_BROWSER_OUT || path.join(here, "out"));
const CHROMIUM = process.env.AUTHVAULT_BROWSER_CHROMIUM || "/usr/bin/chromium";
const WAIT_MS = 15_000;

const GH_CLIENT_ID = "e2e-github-client";
const GH_CLIENT_SECRET = "e2e-github-secret";
const GH_USER = { id: 4242, login: "octocat", name: "Octo Cat", email: "octo@example.com" };
const TOGETHER_KEY = "tgp_v1_e2eKEYabcdefghijklmnopqrstuvwxyz0123";
const ADA = { name: "Ada Lovelace", email: "ada@example.com", password: "analytical engine 1843" };
const NEW_PASSWORD = "difference engine 1822";
const GRACE = { name: "Grace Hopper", email: "grace@example.com", password: "compiler cobol 1959" };
const SESSION_COOKIE = "authvault.session";

// Every server binds 127.0.0.1 only; where /etc/hosts also maps localhost to ::1, try 127.0.0.1
// first (Chromium falls back by itself).
dns.setDefaultResultOrder("ipv4first");

// ---------------------------------------------------------------------------------------------
// Small servers

// Binds 127.0.0.1 and answers the server's URL, naming the host `name`: localhost for what the
// browser opens, 127.0.0.1 for the fakes only authvault calls.
function listen(server, name = "127.0.0.1") {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve(`http://${name}:${server.address().port}`));
  });
}

async function freePort() {
  const s = net.createServer();
  await new Promise((r) => s.listen(0, "127.0.0.1", r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

const s256 = (verifier) => createHash("sha256").update(verifier).digest("base64url");

// GitHub, as tests/api/helpers/providers.rs plays it: /login/oauth/authorize approves at once.
function fakeGithub() {
  const grants = new Map(); // code -> {challenge, redirectUri}
  const tokens = new Set();
  const complaints = [];
  const seen = [];
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, "http://x");
    seen.push(`${req.method} ${url.pathname}`);
    const json = (status, body) => {
      res.writeHead(status, { "content-type": "application/json; charset=utf-8" });
      res.end(JSON.stringify(body));
    };
    if (req.method === "GET" && url.pathname === "/login/oauth/authorize") {
      const q = url.searchParams;
      if (q.get("client_id") !== GH_CLIENT_ID) complaints.push("authorize: wrong client_id");
      if (q.get("code_challenge_method") !== "S256") complaints.push("authorize: no S256 PKCE");
      const scopes = (q.get("scope") || "").split(/[ ,]/);
      for (const s of ["read:user", "user:email"]) {
        if (!scopes.includes(s)) complaints.push(`authorize: scope ${s} missing`);
      }
      const redirectUri = q.get("redirect_uri");
      const state = q.get("state");
      const challenge = q.get("code_challenge");
      if (!redirectUri || !state || !challenge) {
        complaints.push("authorize: missing redirect_uri, state or code_challenge");
        res.writeHead(400).end();
        return;
      }
      const code = randomBytes(16).toString("hex");
      grants.set(code, { challenge, redirectUri });
      const back = new URL(redirectUri);
      back.searchParams.set("code", code);
      back.searchParams.set("state", state);
      res.writeHead(302, { location: back.href }).end();
      return;
    }
    if (req.method === "POST" && url.pathname === "/login/oauth/access_token") {
      const form = new URLSearchParams(await readBody(req));
      let id = form.get("client_id");
      let secret = form.get("client_secret");
      const auth = req.headers.authorization || "";
      if (auth.startsWith("Basic ")) {
        const [u, p] = Buffer.from(auth.slice(6), "base64").toString("utf8").split(":");
        id = decodeURIComponent(u.replace(/\+/g, " "));
        secret = decodeURIComponent((p ?? "").replace(/\+/g, " "));
      }
      let body;
      const grant = grants.get(form.get("code"));
      grants.delete(form.get("code")); // a code is good once
      if (id !== GH_CLIENT_ID || secret !== GH_CLIENT_SECRET) {
        body = { error: "incorrect_client_credentials" };
      } else if (!grant) {
        body = { error: "bad_verification_code" };
      } else if (form.get("redirect_uri") !== grant.redirectUri) {
        body = { error: "redirect_uri_mismatch" };
      } else if (s256(form.get("code_verifier") || "") !== grant.challenge) {
        body = { error: "invalid_pkce_verifier" };
      } else {
        const token = `gho_${randomBytes(16).toString("hex")}`;
        tokens.add(token);
        body = { access_token: token, token_type: "bearer", scope: "read:user,user:email" };
      }
      if (body.error) complaints.push(`access_token: ${body.error}`);
      // GitHub answers 200 either way, form-encoded unless asked for JSON.
      if ((req.headers.accept || "").includes("application/json")) return json(200, body);
      res.writeHead(200, { "content-type": "application/x-www-form-urlencoded" });
      res.end(new URLSearchParams(body).toString());
      return;
    }
    const bearer = (req.headers.authorization || "").replace(/^(Bearer|token) /, "");
    if (req.method === "GET" && (url.pathname === "/user" || url.pathname === "/user/emails")) {
      if (!req.headers["user-agent"]) {
        complaints.push(`${url.pathname}: no User-Agent`);
        res.writeHead(403).end("User-Agent required");
        return;
      }
      if (!tokens.has(bearer)) return json(401, { message: "Bad credentials" });
      if (url.pathname === "/user") {
        return json(200, {
          id: GH_USER.id,
          login: GH_USER.login,
          name: GH_USER.name,
          avatar_url: `https://avatars.example/${GH_USER.id}.png`,
          email: null,
          type: "User",
        });
      }
      return json(200, [
        { email: `${GH_USER.login}@users.noreply.example`, primary: false, verified: true, visibility: null },
        { email: GH_USER.email, primary: true, verified: true, visibility: "private" },
      ]);
    }
    json(404, { message: "Not Found" });
  });
  return { server, complaints, seen };
}

// Together AI's OpenAI-compatible chat completions. A streamed answer sends its first deltas,
// then waits for `release()` before the rest, so that the test can see the page mid-stream.
function fakeTogether() {
  const requests = [];
  let releaseNext;
  let gate = new Promise((r) => (releaseNext = r));
  const server = http.createServer(async (req, res) => {
    if (req.method !== "POST" || req.url !== "/v1/chat/completions") {
      res.writeHead(404, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: { message: "not found" } }));
      return;
    }
    const body = JSON.parse(await readBody(req));
    requests.push({ authorization: req.headers.authorization, body });
    if (req.headers.authorization !== `Bearer ${TOGETHER_KEY}`) {
      res.writeHead(401, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: { message: "Invalid API key", type: "invalid_request_error" } }));
      return;
    }
    const model = body.model;
    const pieces = ["```python\n", "def add(a, b):\n", "    return a + b\n", "```"];
    const usage = { prompt_tokens: 21, completion_tokens: 12, total_tokens: 33 };
    if (!body.stream) {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({
        id: "cmpl-e2e", object: "chat.completion", model,
        choices: [{ index: 0, message: { role: "assistant", content: pieces.join("") }, finish_reason: "stop" }],
        usage,
      }));
      return;
    }
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    const chunk = (data) => res.write(`data: ${JSON.stringify(data)}\n\n`);
    const delta = (content) =>
      chunk({ id: "cmpl-e2e", object: "chat.completion.chunk", model,
        choices: [{ index: 0, delta: { content }, finish_reason: null }] });
    for (const p of pieces.slice(0, 2)) {
      delta(p);
      await sleep(150);
    }
    await gate;
    gate = new Promise((r) => (releaseNext = r));
    for (const p of pieces.slice(2)) {
      delta(p);
      await sleep(150);
    }
    chunk({ id: "cmpl-e2e", object: "chat.completion.chunk", model,
      choices: [{ index: 0, delta: {}, finish_reason: "stop" }], usage });
    res.write("data: [DONE]\n\n");
    res.end();
  });
  return { server, requests, release: () => releaseNext() };
}

const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8", ".md": "text/plain; charset=utf-8" };

// examples/spa/ as any static file server would serve it.
function staticServer(dir) {
  return http.createServer(async (req, res) => {
    const url = new URL(req.url, "http://x");
    const rel = url.pathname === "/" ? "index.html" : decodeURIComponent(url.pathname).slice(1);
    const file = path.resolve(dir, rel);
    const ok = file.startsWith(dir + path.sep) && (await stat(file).catch(() => null))?.isFile();
    if (req.method !== "GET" || !ok) {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found");
      return;
    }
    res.writeHead(200, { "content-type": TYPES[path.extname(file)] || "application/octet-stream" });
    createReadStream(file).pipe(res);
  });
}

// A page on an origin that is not on authvault's CORS list (same host, so the browser would send
// the user's cookies along: only CORS stands between it and the user's data).
function foreignServer() {
  return http.createServer((req, res) => {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end("<!doctype html><title>elsewhere</title><h1>A page on another origin</h1>");
  });
}

// ---------------------------------------------------------------------------------------------
// Mail: the reset link from the newest .eml in the outbox

function decodeQuotedPrintable(text) {
  const soft = text.replace(/=\r?\n/g, "");
  const bytes = [];
  for (let i = 0; i < soft.length; i++) {
    if (soft[i] === "=" && /^[0-9A-Fa-f]{2}$/.test(soft.slice(i + 1, i + 3))) {
      bytes.push(parseInt(soft.slice(i + 1, i + 3), 16));
      i += 2;
    } else {
      bytes.push(...Buffer.from(soft[i], "utf8"));
    }
  }
  return Buffer.from(bytes).toString("utf8");
}

function parseHeaders(block) {
  const headers = {};
  for (const line of block.replace(/\r?\n[ \t]+/g, " ").split(/\r?\n/)) {
    const i = line.indexOf(":");
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  return headers;
}

// The text/plain part of a MIME message, with its transfer encoding undone.
function textPart(message) {
  const split = message.search(/\r?\n\r?\n/);
  const headers = parseHeaders(message.slice(0, split));
  const body = message.slice(split).replace(/^\r?\n\r?\n/, "");
  const type = headers["content-type"] || "text/plain";
  const boundary = /boundary="?([^";]+)"?/i.exec(type)?.[1];
  if (boundary) {
    for (const part of body.split(`--${boundary}`).slice(1)) {
      if (part.startsWith("--")) break;
      const found = textPart(part.replace(/^\r?\n/, ""));
      if (found !== null) return found;
    }
    return null;
  }
  if (!/^text\/plain/i.test(type)) return null;
  const cte = (headers["content-transfer-encoding"] || "7bit").toLowerCase();
  if (cte === "quoted-printable") return decodeQuotedPrintable(body);
  if (cte === "base64") return Buffer.from(body.replace(/\s+/g, ""), "base64").toString("utf8");
  return body;
}

async function waitForMail(outbox, count) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const files = (await readdir(outbox).catch(() => [])).filter((f) => f.endsWith(".eml"));
    if (files.length >= count) {
      const withTimes = await Promise.all(
        files.map(async (f) => ({ f, t: (await stat(path.join(outbox, f))).mtimeMs })),
      );
      withTimes.sort((a, b) => a.t - b.t);
      return readFile(path.join(outbox, withTimes.at(-1).f), "utf8");
    }
    if (Date.now() > deadline) throw new Error(`no mail in ${outbox} within ${WAIT_MS} ms`);
    await sleep(100);
  }
}

// ---------------------------------------------------------------------------------------------
// TOTP (RFC 6238 with SHA-1, 6 digits, 30-second steps), as an authenticator app computes it

const BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

// RFC 4648 base32, padding and spaces ignored.
function base32Decode(text) {
  const bytes = [];
  let bits = 0;
  let value = 0;
  for (const ch of text.replace(/[\s=]/g, "").toUpperCase()) {
    const i = BASE32.indexOf(ch);
    if (i < 0) throw new Error(`not base32: ${JSON.stringify(ch)}`);
    value = (value << 5) | i;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      bytes.push((value >>> bits) & 0xff);
    }
  }
  return Buffer.from(bytes);
}

// HOTP (RFC 4226) of the time step: HMAC-SHA1 of the 8-byte big-endian counter, dynamic
// truncation, the last 6 decimal digits.
function totp(key, step) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = createHmac("sha1", key).update(counter).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  const number = mac.readUInt32BE(offset) & 0x7fffffff;
  return String(number % 1_000_000).padStart(6, "0");
}

const timeStep = (ms = Date.now()) => Math.floor(ms / 30_000);

// Codes of one user's secret. authvault refuses a step it accepted once (and any earlier one),
// and accepts the next step early: each call takes the current step or the next one, a later
// step than any before, and waits for the clock when both are spent.
function totpCodes(secret) {
  const key = base32Decode(secret);
  let last = -Infinity;
  const next = async () => {
    for (;;) {
      const now = timeStep();
      const step = Math.max(now, last + 1);
      if (step <= now + 1) {
        last = step;
        return totp(key, step);
      }
      await sleep((now + 1) * 30_000 - Date.now() + 50);
    }
  };
  // A 6-digit code that no step authvault would accept now is.
  const wrong = () => {
    const now = timeStep();
    const valid = [now - 1, now, now + 1, now + 2].map((t) => totp(key, t));
    return ["000000", "111111", "222222", "333333", "444444"].find((c) => !valid.includes(c));
  };
  return { next, wrong };
}

// ---------------------------------------------------------------------------------------------
// Setup and teardown

let work;
let userDataDir;
let authvault;
let authvaultLog;
let API;
let SPA;
let FOREIGN;
let github;
let together;
let servers = [];
let context;
let page;
const responses = []; // "STATUS METHOD PATH" of every authvault answer the browser got
const pageErrors = [];
let step = 0;

async function startAuthvault(dataDir) {
  const port = await freePort();
  // localhost: the RP ID of passkeys defaults to the public URL's host, and their allowed
  // origins to the public URL's and the CORS origins (the SPA).
  API = `http://localhost:${port}`;
  authvaultLog = path.join(dataDir, "authvault.log");
  const log = openSync(authvaultLog, "w");
  const env = {
    PATH: process.env.PATH,
    RUST_LOG: "info",
    AUTHVAULT_DATABASE_URL: `sqlite://${dataDir}/authvault.db`,
    AUTHVAULT_LISTEN: `127.0.0.1:${port}`,
    AUTHVAULT_PUBLIC_URL: API,
    AUTHVAULT_COOKIE_SECURE: "false",
    AUTHVAULT_BCRYPT_COST: "4",
    AUTHVAULT_CORS_ORIGINS: SPA,
    GITHUB_CLIENT_ID: GH_CLIENT_ID,
    GITHUB_CLIENT_SECRET: GH_CLIENT_SECRET,
    GITHUB_URL: github.url,
    GITHUB_API_URL: github.url,
    TOGETHER_API_URL: `${together.url}/v1`,
  };
  // A clean environment and the temp dir as working directory: no .env of the developer's.
  authvault = spawn(BIN, ["serve"], { cwd: dataDir, env, stdio: ["ignore", log, log] });
  closeSync(log);
  let exited = null;
  authvault.once("exit", (code, signal) => (exited = `exit ${code ?? signal}`));
  authvault.once("error", (err) => (exited = String(err)));
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (exited) {
      throw new Error(`authvault (${BIN}) ${exited} at start:\n${await readFile(authvaultLog, "utf8")}`);
    }
    const up = await fetch(`${API}/healthz`).then((r) => r.ok, () => false);
    if (up) return;
    if (Date.now() > deadline) {
      throw new Error(`authvault did not answer ${API}/healthz within 20 s:\n${await readFile(authvaultLog, "utf8")}`);
    }
    await sleep(100);
  }
}

async function stopAuthvault() {
  if (!authvault || authvault.exitCode !== null || authvault.signalCode !== null) return;
  const gone = new Promise((r) => authvault.once("exit", r));
  authvault.kill("SIGTERM");
  const timer = setTimeout(() => authvault.kill("SIGKILL"), 10_000);
  await gone;
  clearTimeout(timer);
}

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), "authvault-e2e-"));
  await mkdir(OUT, { recursive: true });
  const gh = fakeGithub();
  github = { ...gh, url: await listen(gh.server) };
  const tg = fakeTogether();
  together = { ...tg, url: await listen(tg.server) };
  const spaServer = staticServer(SPA_DIR);
  SPA = await listen(spaServer, "localhost");
  const foreign = foreignServer();
  FOREIGN = await listen(foreign, "localhost");
  servers = [gh.server, tg.server, spaServer, foreign];
  await startAuthvault(work);

  userDataDir = await mkdtemp(path.join(tmpdir(), "authvault-e2e-chromium-"));
  // No try/catch: when Chromium cannot start, the hook fails and so does every test.
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
    viewport: { width: 1280, height: 900 },
    timeout: 30_000,
  });
  context.setDefaultTimeout(WAIT_MS);
  context.on("response", (r) => {
    if (r.url().startsWith(API)) {
      const u = new URL(r.url());
      responses.push(`${r.status()} ${r.request().method()} ${u.pathname}`);
    }
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.on("pageerror", (err) => pageErrors.push(String(err?.stack || err)));
});

after(async () => {
  await context?.close().catch(() => {});
  await stopAuthvault();
  for (const s of servers) {
    s.closeAllConnections?.();
    await new Promise((r) => s.close(r));
  }
  // Kept beside the screenshots: what authvault logged explains a failed step.
  if (authvaultLog) await copyFile(authvaultLog, path.join(OUT, "authvault.log")).catch(() => {});
  if (userDataDir) await rm(userDataDir, { recursive: true, force: true });
  if (work) await rm(work, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------
// Helpers

const byId = (id) => page.getByTestId(id);

async function shot(name) {
  step += 1;
  const file = path.join(OUT, `${String(step).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
}

// Waits until the element's text matches, then asserts it (so a timeout names what was shown).
async function waitText(id, re, timeout = WAIT_MS) {
  const loc = byId(id).first();
  const deadline = Date.now() + timeout;
  let text = "";
  while (Date.now() < deadline) {
    text = (await loc.textContent().catch(() => "")) ?? "";
    if (re.test(text)) return text;
    await sleep(50);
  }
  const statusLine = await byId("status").textContent().catch(() => "?");
  assert.match(text, re, `[data-testid=${id}] never matched (status line: ${statusLine})`);
  return text;
}

async function visible(id) {
  await byId(id).waitFor({ state: "visible" });
}

async function openSpa(query = "") {
  await page.goto(`${SPA}/?api=${encodeURIComponent(API)}${query}`);
}

async function signIn(email, password) {
  await byId("signin-email").fill(email);
  await byId("signin-password").fill(password);
  await byId("signin-submit").click();
}

async function signOut() {
  await byId("signout").click();
  await waitText("status", /^Signed out\.$/);
  await visible("signed-out");
}

// Nothing a script on the page can read holds a token, and every authvault cookie is HttpOnly.
async function assertNoTokenReadable() {
  const seen = await page.evaluate(() => ({
    cookie: document.cookie,
    local: Object.keys(localStorage).length,
    session: Object.keys(sessionStorage).length,
  }));
  assert.equal(seen.cookie, "", "document.cookie is readable");
  assert.equal(seen.local, 0, "localStorage is used");
  assert.equal(seen.session, 0, "sessionStorage is used");
  for (const c of await context.cookies(API)) {
    assert.ok(c.httpOnly, `cookie ${c.name} is not HttpOnly`);
  }
}

const sessionCookie = async () =>
  (await context.cookies(API)).find((c) => c.name === SESSION_COOKIE);

// ---------------------------------------------------------------------------------------------
// The flows, in order; each continues where the one before left the browser.

test("the SPA loads signed out, against the configured API", async () => {
  await openSpa();
  await visible("signed-out");
  await waitText("status", /^Signed out\.$/);
  assert.equal(await byId("api-base").textContent(), API);
  const gh = new URL(await byId("github-signin").getAttribute("href"));
  assert.equal(gh.origin + gh.pathname, `${API}/api/auth/signin/github`);
  assert.equal(gh.searchParams.get("callbackUrl"), `${SPA}/?api=${encodeURIComponent(API)}`);
  await shot("signed-out");
});

test("sign up: the session shows the new user", async () => {
  await byId("signup-name").fill(ADA.name);
  await byId("signup-email").fill(ADA.email);
  await byId("signup-password").fill(ADA.password);
  await byId("signup-submit").click();
  await waitText("status", new RegExp(`^Signed up as ${ADA.email}\\.$`));
  await visible("signed-in");
  assert.equal(await byId("session-name").textContent(), ADA.name);
  assert.equal(await byId("session-email").textContent(), ADA.email);
  assert.equal(await byId("session-providers").textContent(), "credentials");
  assert.match(await byId("session-expires").textContent(), /\d/);
  assert.ok(await sessionCookie(), "no session cookie after sign-up");
  await assertNoTokenReadable();
  await shot("signed-up");
});

test("sign out, then sign in with the password", async () => {
  await signOut();
  assert.equal(await sessionCookie(), undefined, "the session cookie outlived sign-out");
  await shot("signed-out-again");
  await signIn(ADA.email, "not the password");
  await waitText("status", /invalid_credentials/);
  await signIn(ADA.email, ADA.password);
  await waitText("status", new RegExp(`^Signed in as ${ADA.email}\\.$`));
  assert.equal(await byId("session-email").textContent(), ADA.email);
  await assertNoTokenReadable();
  await shot("signed-in");
});

test("API keys: saved keys are listed masked, never in full", async () => {
  await waitText("api-key-togetherAI", /^Together AI: not set$/);
  await byId("api-key-provider").selectOption("togetherAI");
  await byId("api-key-value").fill(TOGETHER_KEY);
  await byId("api-key-save").click();
  await waitText("status", /^Together AI key saved\.$/);
  // 24 or more characters: the first 8 and the last 4.
  await waitText("api-key-togetherAI", /^Together AI: tgp_v1_e\.\.\.0123$/);
  await byId("api-key-provider").selectOption("kestra");
  await byId("api-key-value").fill("kestra-key-1");
  await byId("api-key-save").click();
  await waitText("api-key-kestra", /^Kestra: \.\.\.ey-1$/);
  await byId("api-key-provider").selectOption("kestra");
  await byId("api-key-save").click(); // empty: removes it
  await waitText("status", /^Kestra key removed\.$/);
  await waitText("api-key-kestra", /^Kestra: not set$/);
  assert.equal(await byId("api-key-value").inputValue(), "");
  const html = await page.content();
  assert.ok(!html.includes(TOGETHER_KEY), "the full key is on the page");
  await shot("api-keys");
});

test("generate: streamed deltas show as they arrive, then the final code", async () => {
  await byId("generate-prompt").fill("add two numbers in python");
  await byId("generate-submit").click();
  // The fake holds the rest of the stream until released: the page must show the first deltas.
  await waitText("generate-output", /def add\(a, b\):/);
  assert.equal(await byId("generate-status").textContent(), "Streaming…");
  assert.doesNotMatch(await byId("generate-output").textContent(), /return/);
  await shot("generate-streaming");
  together.release();
  await waitText("generate-status", /^Done: .+, 21 prompt \+ 12 completion tokens\.$/);
  assert.equal(await byId("generate-output").textContent(), "def add(a, b):\n    return a + b");
  const [req] = together.requests;
  assert.equal(together.requests.length, 1);
  assert.equal(req.body.stream, true);
  assert.equal(req.authorization, `Bearer ${TOGETHER_KEY}`);
  await shot("generate-done");
});

test("stay signed in past the access token's expiry, through the refresh cookie", async () => {
  const before = (await sessionCookie()).value;
  // The session cookie expires (Max-Age=3600) long before the refresh cookie: simulate that.
  await context.clearCookies({ name: SESSION_COOKIE });
  assert.equal(await sessionCookie(), undefined);
  const from = responses.length;
  await byId("session-reload").click();
  await waitText("status", /^Session reloaded\.$/);
  assert.equal(await byId("session-email").textContent(), ADA.email);
  const seen = responses.slice(from);
  const i = seen.indexOf("401 GET /api/auth/session");
  assert.ok(i >= 0, `no 401 first: ${seen.join(", ")}`);
  assert.equal(seen[i + 1], "200 POST /api/auth/refresh", seen.join(", "));
  assert.equal(seen[i + 2], "200 GET /api/auth/session", seen.join(", "));
  const renewed = await sessionCookie();
  assert.ok(renewed && renewed.value !== before, "no new session cookie after the refresh");

  // And on a fresh page load (a user coming back later).
  await context.clearCookies({ name: SESSION_COOKIE });
  await openSpa();
  await waitText("status", new RegExp(`^Signed in as ${ADA.email}\\.$`));
  await visible("signed-in");
  await assertNoTokenReadable();
  await shot("refreshed");
});

test("sessions: listed with this browser marked, another one ended", async () => {
  // A second device: an app signing in with the password.
  const res = await fetch(`${API}/api/auth/signin`, {
    method: "POST",
    headers: { "content-type": "application/json", "user-agent": "e2e-phone/1.0" },
    body: JSON.stringify({ email: ADA.email, password: ADA.password, client: "app" }),
  });
  assert.equal(res.status, 200);
  const phone = (await res.json()).session.accessToken;
  const asPhone = () => fetch(`${API}/api/user`, { headers: { authorization: `Bearer ${phone}` } });
  assert.equal((await asPhone()).status, 200);

  await byId("sessions-reload").click();
  const rows = byId("session-row");
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="session-row"]').length === 2);
  assert.equal(await page.locator('[data-testid="session-row"].current').count(), 1);
  const other = page.locator('[data-testid="session-row"]:not(.current)');
  assert.match(await other.textContent(), /e2e-phone\/1\.0/);
  await shot("sessions");
  const id = await other.getAttribute("data-session-id");
  await byId(`session-end-${id}`).click();
  await waitText("status", /^Session ended\.$/);
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="session-row"]').length === 1);
  assert.equal(await rows.first().getAttribute("class"), "current");
  assert.equal((await asPhone()).status, 401, "the ended session's token still works");
  await shot("session-ended");
});

test("forgot and reset password through the mailed link", async () => {
  await signOut();
  const outbox = path.join(work, "outbox");
  const before = (await readdir(outbox).catch(() => [])).filter((f) => f.endsWith(".eml")).length;
  await byId("forgot-email").fill(ADA.email);
  await byId("forgot-submit").click();
  await waitText("status", /reset link is on its way/);
  await shot("forgot-sent");
  const text = textPart(await waitForMail(outbox, before + 1));
  assert.ok(text, "the mail has no text/plain part");
  const self = `${SPA}/?api=${encodeURIComponent(API)}`;
  const link = text.match(/https?:\/\/\S+/g)?.find((u) => u.includes("token="));
  assert.ok(link, `no reset link in the mail:\n${text}`);
  assert.ok(link.startsWith(`${self}&token=`), `the link does not lead back to the SPA: ${link}`);

  await page.goto(link);
  await visible("reset-view");
  await waitText("status", /^Choose a new password\.$/);
  await shot("reset-form");
  await byId("reset-password").fill(NEW_PASSWORD);
  await byId("reset-submit").click();
  await waitText("status", /^Password changed\. Sign in with the new one\.$/);
  assert.ok(!page.url().includes("token="), `the token stayed in the address bar: ${page.url()}`);
  await visible("signed-out");
  await signIn(ADA.email, ADA.password);
  await waitText("status", /invalid_credentials/);
  await signIn(ADA.email, NEW_PASSWORD);
  await waitText("status", new RegExp(`^Signed in as ${ADA.email}\\.$`));
  await shot("signed-in-new-password");
  await signOut();
});

test("sign in with GitHub: away to the provider and back, signed in", async () => {
  await byId("github-signin").click();
  await page.waitForURL((u) => u.href.startsWith(`${SPA}/`));
  await waitText("status", new RegExp(`^Signed in as ${GH_USER.email}\\.$`));
  assert.equal(await byId("session-name").textContent(), GH_USER.name);
  assert.equal(await byId("session-providers").textContent(), "github");
  assert.deepEqual(github.complaints, []);
  for (const call of ["GET /login/oauth/authorize", "POST /login/oauth/access_token", "GET /user", "GET /user/emails"]) {
    assert.ok(github.seen.includes(call), `authvault never made ${call}: ${github.seen.join(", ")}`);
  }
  await assertNoTokenReadable();
  await shot("github-signed-in");
});

test("another origin cannot read /api/user with the user's cookie (CORS)", async () => {
  const read = (api) =>
    fetch(`${api}/api/user`, { credentials: "include" }).then(
      async (r) => ({ read: true, status: r.status, body: await r.text() }),
      (e) => ({ read: false, error: String(e) }),
    );
  // The SPA's own origin can, which shows the cookie is there.
  const own = await page.evaluate(read, API);
  assert.equal(own.read, true, own.error);
  assert.equal(own.status, 200);
  assert.equal(JSON.parse(own.body).email, GH_USER.email);

  const foreign = await context.newPage();
  try {
    await foreign.goto(`${FOREIGN}/`);
    const theirs = await foreign.evaluate(read, API);
    assert.equal(theirs.read, false, `a foreign origin read the user: ${JSON.stringify(theirs)}`);
    assert.match(theirs.error, /TypeError|Failed to fetch/);
    const write = await foreign.evaluate((api) =>
      fetch(`${api}/api/user/api-keys`, {
        method: "POST",
        credentials: "include",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ togetherAI: null }),
      }).then((r) => `read ${r.status}`, (e) => String(e)), API);
    assert.match(write, /TypeError|Failed to fetch/);
    await foreign.screenshot({ path: path.join(OUT, `${String(++step).padStart(2, "0")}-foreign-origin.png`) });
  } finally {
    await foreign.close();
  }
  // What the browser was shielded from: with the cookie and that Origin, authvault does answer
  // the read, but with no Access-Control-Allow-Origin, so no page of that origin sees it.
  const cookie = (await context.cookies(API)).map((c) => `${c.name}=${c.value}`).join("; ");
  const direct = await fetch(`${API}/api/user`, { headers: { origin: FOREIGN, cookie } });
  assert.equal(direct.status, 200);
  assert.equal(direct.headers.get("access-control-allow-origin"), null);
  assert.equal(direct.headers.get("access-control-allow-credentials"), null);
  const ours = await fetch(`${API}/api/user`, { headers: { origin: SPA, cookie } });
  assert.equal(ours.headers.get("access-control-allow-origin"), SPA);
  assert.equal(ours.headers.get("access-control-allow-credentials"), "true");
  // A write from there is refused by authvault itself, whatever the browser does.
  const write = await fetch(`${API}/api/user/api-keys`, {
    method: "POST",
    headers: { origin: FOREIGN, cookie, "content-type": "application/json" },
    body: JSON.stringify({ togetherAI: null }),
  });
  assert.equal(write.status, 403);
  assert.equal((await write.json()).code, "origin_forbidden");
  await assertNoTokenReadable();
});

test("sign out ends the session", async () => {
  await signOut();
  assert.equal(await sessionCookie(), undefined);
  await openSpa();
  await waitText("status", /^Signed out\.$/);
  await visible("signed-out");
  await assertNoTokenReadable();
  await shot("final-signed-out");
});

// ---------------------------------------------------------------------------------------------
// Two-factor sign-in (TOTP and recovery codes)

let grace; // {codes, recovery}: Grace's TOTP codes and her current recovery codes
let octo; // the GitHub user's TOTP codes

const RECOVERY_CODE = /^[a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4}$/;

async function recoveryCodesShown() {
  await visible("mfa-recovery");
  const codes = await byId("mfa-recovery-code").allTextContents();
  assert.equal(codes.length, 10, `recovery codes shown: ${codes.join(", ")}`);
  for (const c of codes) assert.match(c, RECOVERY_CODE);
  assert.equal(new Set(codes).size, 10, "a recovery code is shown twice");
  return codes;
}

// Enrols the signed-in user from the panel: returns the secret shown and the server's answer.
async function enrolFromPanel() {
  await waitText("mfa-state", /^off$/);
  await visible("mfa-off");
  assert.equal(await byId("mfa-on").isHidden(), true);
  const answer = page.waitForResponse(
    (r) => r.url() === `${API}/api/user/mfa/totp` && r.request().method() === "POST",
  );
  await byId("mfa-enrol").click();
  const res = await answer;
  assert.equal(res.status(), 200);
  const body = await res.json();
  await waitText("status", /^Scan the QR code/);
  await visible("mfa-enrolment");
  const secret = (await byId("mfa-secret").textContent()).replace(/\s+/g, "");
  assert.equal(secret, body.secret, "the key for manual entry is not the enrolment's secret");
  assert.match(secret, /^[A-Z2-7]{32}$/);
  assert.ok(body.otpauthUrl.includes(`secret=${secret}`), body.otpauthUrl);
  return { secret, body };
}

async function confirmFromPanel(code) {
  await byId("mfa-confirm-code").fill(code);
  await byId("mfa-confirm-submit").click();
  await waitText("status", /^Two-factor sign-in is on\. Save your recovery codes\.$/);
  await waitText("mfa-state", /^on$/);
  assert.equal(await byId("mfa-enrolment").isHidden(), true);
  assert.equal(await byId("mfa-secret").textContent(), "", "the secret stayed on the page");
  return recoveryCodesShown();
}

async function secondStepShown() {
  await visible("mfa-step-view");
  await waitText("status", /^Enter the code from your authenticator app\.$/);
  assert.equal(await byId("signed-in").isHidden(), true);
  assert.equal(await sessionCookie(), undefined, "a session cookie before the second step");
}

async function secondStep(code) {
  await byId("mfa-step-code").fill(code);
  await byId("mfa-step-submit").click();
}

test("the test's TOTP gives RFC 6238's SHA-1 test vectors", () => {
  const key = Buffer.from("12345678901234567890", "ascii");
  assert.equal(totp(key, timeStep(59_000)), "287082"); // 94287082
  assert.equal(totp(key, timeStep(1_111_111_109_000)), "081804"); // 07081804
  assert.equal(totp(key, timeStep(1_234_567_890_000)), "005924"); // 89005924
  assert.equal(totp(key, timeStep(20_000_000_000_000)), "353130"); // 65353130
  // The same key as authvault hands it out: base32 without padding.
  assert.deepEqual(base32Decode("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"), key);
  assert.equal(totp(base32Decode("gezd gnbv gy3t qojq gezd gnbv gy3t qojq"), 1), "287082");
});

test("two-factor set-up: QR code and key shown, a code turns it on, recovery codes shown once", async () => {
  await byId("signup-name").fill(GRACE.name);
  await byId("signup-email").fill(GRACE.email);
  await byId("signup-password").fill(GRACE.password);
  await byId("signup-submit").click();
  await waitText("status", new RegExp(`^Signed up as ${GRACE.email}\\.$`));
  await visible("mfa-panel");

  const { secret, body } = await enrolFromPanel();
  // The QR code is the server's SVG, shown as an image (never inserted as markup).
  assert.match(body.qrSvg, /<svg[\s>]/);
  const qr = byId("mfa-qr");
  await qr.waitFor({ state: "visible" });
  const src = await qr.getAttribute("src");
  assert.ok(src.startsWith("data:image/svg+xml"), `the QR image is not an SVG: ${src.slice(0, 40)}`);
  const svg = decodeURIComponent(src.slice(src.indexOf(",") + 1));
  assert.equal(svg, body.qrSvg);
  await page.waitForFunction(() => {
    const img = document.querySelector('[data-testid="mfa-qr"]');
    return img.complete && img.naturalWidth > 100 && img.naturalHeight > 100;
  });
  assert.equal(await page.locator("[data-testid=mfa-panel] svg").count(), 0, "SVG markup inserted");
  await shot("mfa-enrol");

  grace = { codes: totpCodes(secret) };
  grace.recovery = await confirmFromPanel(await grace.codes.next());
  await shot("mfa-recovery-codes");
  await byId("mfa-recovery-done").click();
  await waitText("status", /^Recovery codes hidden\.$/);
  assert.equal(await byId("mfa-recovery").isHidden(), true);
  await visible("mfa-on");
  // Shown once: not after a reload either.
  await openSpa();
  await waitText("status", new RegExp(`^Signed in as ${GRACE.email}\\.$`));
  await waitText("mfa-state", /^on$/);
  assert.equal(await byId("mfa-recovery").isHidden(), true);
  const html = await page.content();
  for (const c of grace.recovery) assert.ok(!html.includes(c), "a recovery code is on the page again");
  assert.ok(!html.includes(secret), "the TOTP secret is on the page again");
});

test("two-factor sign-in with the password: the second step takes a code from the app", async () => {
  await signOut();
  await signIn(GRACE.email, GRACE.password);
  await secondStepShown();
  assert.ok(!(await page.content()).includes(GRACE.password));
  await shot("mfa-second-step");
  await secondStep(grace.codes.wrong());
  await waitText("status", /invalid_code/);
  await visible("mfa-step-view");
  assert.equal(await byId("mfa-step-code").inputValue(), "");
  await secondStep(await grace.codes.next());
  await waitText("status", new RegExp(`^Signed in as ${GRACE.email}\\.$`));
  await visible("signed-in");
  await waitText("mfa-state", /^on$/);
  assert.ok(await sessionCookie(), "no session cookie after the second step");
  const session = await page.evaluate((api) =>
    fetch(`${api}/api/auth/session`, { credentials: "include" }).then((r) => r.json()), API);
  assert.equal(session.user.mfaEnabled, true);
  for (const m of ["pwd", "otp", "mfa"]) assert.ok(session.amr.includes(m), `amr: ${session.amr}`);
  await assertNoTokenReadable();
  await shot("mfa-signed-in");
});

test("two-factor sign-in with a recovery code typed in upper case with spaces", async () => {
  await signOut();
  await signIn(GRACE.email, GRACE.password);
  await secondStepShown();
  const typed = grace.recovery[0].toUpperCase().replace(/-/g, " ");
  assert.match(typed, /^[A-Z0-9]{4} [A-Z0-9]{4} [A-Z0-9]{4}$/);
  await secondStep(typed);
  await waitText("status", new RegExp(`^Signed in as ${GRACE.email}\\.$`));
  await waitText("mfa-state", /^on$/);
  await assertNoTokenReadable();
});

test("new recovery codes: a new set is shown and the old set stops working", async () => {
  await byId("mfa-regenerate-code").fill(grace.recovery[1]);
  await byId("mfa-regenerate-submit").click();
  await waitText("status", /^New recovery codes made; the old ones no longer work\.$/);
  const fresh = await recoveryCodesShown();
  for (const c of fresh) assert.ok(!grace.recovery.includes(c), `an old code in the new set: ${c}`);
  assert.equal(await byId("mfa-regenerate-code").inputValue(), "");
  await shot("mfa-new-recovery-codes");
  await byId("mfa-recovery-done").click();

  // An app signing in: an old code is refused, a new one is taken.
  const post = (p, body) => fetch(`${API}${p}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const first = await post("/api/auth/signin", { email: GRACE.email, password: GRACE.password, client: "app" });
  assert.equal(first.status, 200);
  const step = await first.json();
  assert.equal(step.mfaRequired, true);
  assert.deepEqual(step.methods, ["totp", "recoveryCode"]);
  const old = await post("/api/auth/mfa/verify", { mfaToken: step.mfaToken, code: grace.recovery[2], client: "app" });
  assert.equal(old.status, 401);
  assert.equal((await old.json()).code, "invalid_code");
  const ok = await post("/api/auth/mfa/verify", { mfaToken: step.mfaToken, code: fresh[0], client: "app" });
  assert.equal(ok.status, 200);
  assert.equal((await ok.json()).user.email, GRACE.email);
  grace.recovery = fresh.slice(1);
});

test("two-factor with GitHub: the provider sends the browser back with mfaToken=, the second step signs in", async () => {
  await signOut();
  await byId("github-signin").click();
  await waitText("status", new RegExp(`^Signed in as ${GH_USER.email}\\.$`));
  const { secret } = await enrolFromPanel();
  octo = totpCodes(secret);
  await confirmFromPanel(await octo.next());
  await byId("mfa-recovery-done").click();
  await signOut();

  const callback = page.waitForResponse((r) => r.url().startsWith(`${API}/api/auth/callback/github`));
  const landing = page.waitForRequest(
    (r) => r.url().startsWith(`${SPA}/`) && new URL(r.url()).searchParams.has("mfaToken"),
  );
  await byId("github-signin").click();
  const res = await callback;
  assert.ok([302, 303, 307].includes(res.status()), `callback answered ${res.status()}`);
  const headers = await res.allHeaders();
  assert.ok(!(headers["set-cookie"] || "").includes(`${SESSION_COOKIE}=ey`), "the callback set a session cookie");
  const back = new URL((await landing).url());
  assert.equal(back.searchParams.get("api"), API);
  assert.ok(back.searchParams.get("mfaToken").length >= 40, back.href);

  await secondStepShown();
  // The token left the address bar (and so the history) as soon as the page read it.
  assert.equal(page.url(), `${SPA}/?api=${encodeURIComponent(API)}`);
  await shot("mfa-github-second-step");
  await secondStep(await octo.next());
  await waitText("status", new RegExp(`^Signed in as ${GH_USER.email}\\.$`));
  assert.equal(await byId("session-providers").textContent(), "github");
  await waitText("mfa-state", /^on$/);
  assert.deepEqual(github.complaints, []);
  await assertNoTokenReadable();
  await shot("mfa-github-signed-in");
});

test("turn two-factor sign-in off with a code: the next sign-in asks no second step", async () => {
  await byId("mfa-disable-code").fill(octo.wrong());
  await byId("mfa-disable-submit").click();
  await waitText("status", /invalid_code/);
  await waitText("mfa-state", /^on$/);
  await byId("mfa-disable-code").fill(await octo.next());
  await byId("mfa-disable-submit").click();
  await waitText("status", /^Two-factor sign-in is off\.$/);
  await waitText("mfa-state", /^off$/);
  await visible("mfa-off");
  assert.equal(await byId("mfa-on").isHidden(), true);
  await shot("mfa-off");
  await signOut();
  await byId("github-signin").click();
  await page.waitForURL((u) => u.href.startsWith(`${SPA}/`));
  await waitText("status", new RegExp(`^Signed in as ${GH_USER.email}\\.$`));
  await waitText("mfa-state", /^off$/);
  await signOut();
});

// ---------------------------------------------------------------------------------------------
// Passkeys (WebAuthn), made and used by a virtual authenticator: a platform authenticator that
// keeps discoverable credentials and verifies its user, answering without a prompt.

let device; // the virtual authenticator of `page`
let adaPasskey; // {id, credentialId}

// A virtual authenticator attached to one page (each page needs its own).
async function virtualAuthenticator(target) {
  const cdp = await target.context().newCDPSession(target);
  await cdp.send("WebAuthn.enable", { enableUI: false });
  const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: {
      protocol: "ctap2",
      transport: "internal",
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  return {
    credentials: async () => (await cdp.send("WebAuthn.getCredentials", { authenticatorId })).credentials,
    clear: () => cdp.send("WebAuthn.clearCredentials", { authenticatorId }),
    userVerified: (isUserVerified) => cdp.send("WebAuthn.setUserVerified", { authenticatorId, isUserVerified }),
  };
}

// The DevTools protocol writes binary as standard base64; WebAuthn's JSON as base64url.
const b64url = (base64) => Buffer.from(base64, "base64").toString("base64url");

const passkeyRows = () => page.locator('[data-testid="passkey-row"]');

async function passkeyCount(n) {
  await page.waitForFunction(
    (n) => document.querySelectorAll('[data-testid="passkey-row"]').length === n, n);
  assert.equal(await byId("passkeys-none").isHidden(), n > 0);
}

// Adds a passkey from the panel: the start's options, the finish's request and answer.
async function addPasskey(name) {
  const started = page.waitForResponse((r) => r.url() === `${API}/api/user/passkeys/register/start`);
  const finished = page.waitForResponse((r) => r.url() === `${API}/api/user/passkeys/register/finish`);
  if (name !== undefined) await byId("passkey-add-name").fill(name);
  await byId("passkey-add").click();
  const start = await started;
  assert.equal(start.status(), 200);
  const finish = await finished;
  assert.equal(finish.status(), 201, await finish.text());
  await waitText("status", /^Passkey added: /);
  return { options: (await start.json()).publicKey, sent: finish.request().postDataJSON(), passkey: await finish.json() };
}

// Signs in with whatever passkey the authenticator holds for localhost.
async function passkeySignIn() {
  const finished = page.waitForResponse((r) => r.url() === `${API}/api/auth/passkey/finish`);
  await byId("passkey-signin").click();
  return finished;
}

const sessionNow = () => page.evaluate((api) =>
  fetch(`${api}/api/auth/session`, { credentials: "include" }).then((r) => r.json()), API);

test("the SPA's base64url is WebAuthn's: unpadded, URL-safe, both ways, every length", async () => {
  const { toBase64url, fromBase64url } = await import(path.join(SPA_DIR, "webauthn.js"));
  for (let n = 0; n <= 70; n++) {
    const bytes = randomBytes(n);
    bytes[0] = 0xfb; // encodes as "+" or "/" in plain base64
    const text = toBase64url(bytes.subarray(0, n));
    assert.equal(text, bytes.subarray(0, n).toString("base64url"));
    assert.deepEqual(Buffer.from(fromBase64url(text)), bytes.subarray(0, n));
    assert.equal(toBase64url(new Uint8Array(bytes).buffer.slice(0, n)), text); // an ArrayBuffer too
  }
});

test("passkeys are on: authvault lists them and the signed-out page offers passkey sign-in", async () => {
  const providers = await (await fetch(`${API}/api/auth/providers`)).json();
  assert.ok(providers.passkey, `no passkey provider: ${JSON.stringify(providers)}`);
  assert.equal(providers.passkey.id, "passkey");
  assert.equal(providers.passkey.name, "Passkey");
  assert.equal(providers.passkey.type, "webauthn");
  await openSpa();
  await waitText("status", /^Signed out\.$/);
  await visible("passkey-signin");
  assert.equal(await page.evaluate(() => window.isSecureContext), true);
  device = await virtualAuthenticator(page);
});

test("add a passkey: resident on the device, listed, and passkey among the sign-in methods", async () => {
  await signIn(ADA.email, NEW_PASSWORD);
  await waitText("status", new RegExp(`^Signed in as ${ADA.email}\\.$`));
  await visible("passkeys-panel");
  await visible("passkeys-none");
  await passkeyCount(0);
  await shot("passkeys-none");

  const outbox = path.join(work, "outbox");
  const mails = (await readdir(outbox).catch(() => [])).filter((f) => f.endsWith(".eml")).length;
  const { options, sent, passkey } = await addPasskey("Ada's laptop");
  await waitText("status", /^Passkey added: Ada's laptop\.$/);
  // What authvault asked for: a discoverable credential, verified user, for RP ID localhost.
  assert.equal(options.rp.id, "localhost");
  assert.equal(options.user.name, ADA.email);
  assert.equal(Buffer.from(options.user.id, "base64url").length, 16);
  assert.ok(Buffer.from(options.challenge, "base64url").length >= 16);
  assert.equal(options.authenticatorSelection.residentKey, "required");
  assert.equal(options.authenticatorSelection.userVerification, "required");
  assert.deepEqual(options.excludeCredentials ?? [], []);
  // What the page sent: RegistrationResponseJSON.
  assert.equal(sent.name, "Ada's laptop");
  assert.equal(sent.credential.type, "public-key");
  assert.equal(sent.credential.id, sent.credential.rawId);
  for (const f of ["clientDataJSON", "attestationObject"]) assert.ok(sent.credential.response[f], f);
  assert.equal(passkey.name, "Ada's laptop");
  assert.equal(passkey.lastUsedAt, null);

  await passkeyCount(1);
  const row = passkeyRows().first();
  assert.equal(await row.getAttribute("data-passkey-id"), passkey.id);
  assert.equal(await row.getByTestId("passkey-name").textContent(), "Ada's laptop");
  assert.match(await row.getByTestId("passkey-created").textContent(), /\d/);
  assert.equal(await row.getByTestId("passkey-last-used").textContent(), "never");
  await waitText("session-providers", /^credentials, passkey$/);
  assert.equal(await byId("passkey-add-name").inputValue(), "");

  // On the device: one discoverable credential of localhost, for Ada's user handle.
  const held = await device.credentials();
  assert.equal(held.length, 1);
  assert.equal(held[0].isResidentCredential, true);
  assert.equal(held[0].rpId, "localhost");
  assert.equal(b64url(held[0].credentialId), sent.credential.rawId);
  assert.equal(b64url(held[0].userHandle), options.user.id);
  adaPasskey = { id: passkey.id, credentialId: sent.credential.rawId };
  // The notice authvault mails, naming the passkey.
  const notice = textPart(await waitForMail(outbox, mails + 1));
  assert.match(notice, /passkey/i);
  assert.ok(notice.includes("Ada's laptop"), notice);
  await assertNoTokenReadable();
  await shot("passkey-added");
});

test("a second passkey on the same device is refused: authvault excludes the one it has", async () => {
  const started = page.waitForResponse((r) => r.url() === `${API}/api/user/passkeys/register/start`);
  await byId("passkey-add").click();
  const options = (await (await started).json()).publicKey;
  assert.deepEqual(options.excludeCredentials.map((c) => c.id), [adaPasskey.credentialId]);
  await waitText("status", /^Adding a passkey failed: this device already holds a passkey for this account\.$/);
  assert.equal(await byId("passkey-add").isEnabled(), true);
  await passkeyCount(1);
  assert.equal((await device.credentials()).length, 1);
});

test("sign in with the passkey: no password, amr hwk and mfa, and its last use shown", async () => {
  await signOut();
  // A device that cannot verify its user: refused by the browser, nothing sent to finish.
  await device.userVerified(false);
  await byId("passkey-signin").click();
  await waitText("status", /^Passkey sign-in failed: cancelled, timed out, or the device could not verify you\.$/);
  await visible("signed-out");
  assert.equal(await sessionCookie(), undefined);
  await device.userVerified(true);

  const countBefore = (await device.credentials())[0].signCount;
  const res = await passkeySignIn();
  assert.equal(res.status(), 200, await res.text());
  const body = await res.json();
  assert.equal(body.user.email, ADA.email);
  assert.equal(body.mfaRequired, undefined);
  await waitText("status", new RegExp(`^Signed in as ${ADA.email}\\.$`));
  await visible("signed-in");
  assert.ok(await sessionCookie(), "no session cookie after the passkey sign-in");
  const session = await sessionNow();
  assert.equal(session.user.email, ADA.email);
  assert.deepEqual(session.amr, ["hwk", "mfa"]);
  assert.ok((await device.credentials())[0].signCount > countBefore, "the device signed nothing");
  await passkeyCount(1);
  assert.match(await passkeyRows().first().getByTestId("passkey-last-used").textContent(), /\d/);
  await assertNoTokenReadable();
  await shot("passkey-signed-in");
});

test("rename a passkey: the new name is kept; cancel keeps the old one", async () => {
  const row = passkeyRows().first();
  await byId(`passkey-rename-${adaPasskey.id}`).click();
  await visible("passkey-rename-form");
  assert.equal(await byId("passkey-rename-name").inputValue(), "Ada's laptop");
  await byId("passkey-rename-cancel").click();
  assert.equal(await row.getByTestId("passkey-name").textContent(), "Ada's laptop");

  await byId(`passkey-rename-${adaPasskey.id}`).click();
  await byId("passkey-rename-name").fill("Ada's work laptop");
  await shot("passkey-rename");
  await byId("passkey-rename-save").click();
  await waitText("status", /^Passkey renamed to Ada's work laptop\.$/);
  await waitText("passkey-name", /^Ada's work laptop$/);
  assert.equal(await byId("passkey-rename-form").count(), 0);
  await openSpa();
  await waitText("status", new RegExp(`^Signed in as ${ADA.email}\\.$`));
  await waitText("passkey-name", /^Ada's work laptop$/);
});

test("remove a passkey: it leaves the list and signs in no more", async () => {
  await byId(`passkey-remove-${adaPasskey.id}`).click();
  await waitText("status", /^Passkey Ada's work laptop removed\.$/);
  await passkeyCount(0);
  await waitText("session-providers", /^credentials$/);
  await shot("passkey-removed");
  await signOut();
  // The device still holds the credential; authvault no longer knows it.
  assert.equal((await device.credentials()).length, 1);
  const res = await passkeySignIn();
  assert.equal(res.status(), 401);
  await waitText("status", /invalid_credentials/);
  await visible("signed-out");
  assert.equal(await sessionCookie(), undefined);
  await device.clear();
});

test("two-factor sign-in on: the passkey signs in with no second step", async () => {
  await signIn(GRACE.email, GRACE.password);
  await secondStepShown();
  await secondStep(grace.recovery.shift());
  await waitText("status", new RegExp(`^Signed in as ${GRACE.email}\\.$`));
  await waitText("mfa-state", /^on$/);
  // No name given: authvault names it.
  const { passkey } = await addPasskey();
  assert.equal(passkey.name, "Passkey");
  await waitText("status", /^Passkey added: Passkey\.$/);
  await waitText("session-providers", /^credentials, passkey$/);
  await signOut();

  const from = responses.length;
  const res = await passkeySignIn();
  assert.equal(res.status(), 200, await res.text());
  const body = await res.json();
  assert.equal(body.mfaRequired, undefined, "a passkey sign-in asked for a second factor");
  assert.ok(body.session?.expiresAt, JSON.stringify(body));
  await waitText("status", new RegExp(`^Signed in as ${GRACE.email}\\.$`));
  assert.equal(await byId("mfa-step-view").isHidden(), true);
  await waitText("mfa-state", /^on$/);
  assert.ok(!responses.slice(from).some((r) => r.includes("/api/auth/mfa/verify")), responses.slice(from).join(", "));
  assert.deepEqual((await sessionNow()).amr, ["hwk", "mfa"]);
  await assertNoTokenReadable();
  await shot("passkey-mfa-user-signed-in");
  await signOut();
  await device.clear();
});

test("a passkey as the only way in: it cannot be removed, and signs in by itself", async () => {
  await byId("github-signin").click();
  await waitText("status", new RegExp(`^Signed in as ${GH_USER.email}\\.$`));
  await addPasskey("Octo's key");
  await waitText("session-providers", /^github, passkey$/);
  // Unlink GitHub (the page has no control for it): the passkey is all that is left.
  const unlinked = await page.evaluate(async (api) => {
    const { csrfToken } = await (await fetch(`${api}/api/auth/csrf`, { credentials: "include" })).json();
    const r = await fetch(`${api}/api/user/providers/github`, {
      method: "DELETE", credentials: "include", headers: { "x-csrf-token": csrfToken },
    });
    return { status: r.status, body: await r.json() };
  }, API);
  assert.equal(unlinked.status, 200, JSON.stringify(unlinked.body));
  assert.deepEqual(unlinked.body.providers, ["passkey"]);
  await openSpa();
  await waitText("session-providers", /^passkey$/);
  await passkeyCount(1);
  const id = await passkeyRows().first().getAttribute("data-passkey-id");

  await byId(`passkey-remove-${id}`).click();
  await waitText("status", /^Passkey Octo's key is your only way left to sign in, so it stays: add another passkey first\. \(last_sign_in_method\)$/);
  assert.equal(await byId("status").getAttribute("class"), "error");
  await passkeyCount(1);
  await shot("passkey-last-sign-in-method");

  await signOut();
  const res = await passkeySignIn();
  assert.equal(res.status(), 200, await res.text());
  await waitText("status", new RegExp(`^Signed in as ${GH_USER.email}\\.$`));
  await waitText("session-providers", /^passkey$/);
  // A passkey sign-in is a fresh sign-in: adding another passkey gets past reauth_required
  // (this device then refuses, holding one already).
  const started = page.waitForResponse((r) => r.url() === `${API}/api/user/passkeys/register/start`);
  await byId("passkey-add").click();
  assert.equal((await started).status(), 200);
  await waitText("status", /^Adding a passkey failed: this device already holds a passkey for this account\.$/);
  await signOut();
  await device.clear();
});

test("a browser without WebAuthn's JSON methods: the hand-made conversions add and use a passkey", async () => {
  const main = page;
  const other = await context.newPage();
  other.on("pageerror", (err) => pageErrors.push(String(err?.stack || err)));
  // Before any script of the page: as in a browser of WebAuthn Level 2.
  await other.addInitScript(() => {
    delete PublicKeyCredential.parseCreationOptionsFromJSON;
    delete PublicKeyCredential.parseRequestOptionsFromJSON;
    delete PublicKeyCredential.prototype.toJSON;
  });
  page = other;
  try {
    const own = await virtualAuthenticator(page);
    await openSpa();
    await waitText("status", /^Signed out\.$/);
    assert.deepEqual(
      await page.evaluate(() => [typeof PublicKeyCredential.parseCreationOptionsFromJSON,
        typeof PublicKeyCredential.parseRequestOptionsFromJSON, typeof PublicKeyCredential.prototype.toJSON]),
      ["undefined", "undefined", "undefined"],
    );
    await signIn(ADA.email, NEW_PASSWORD);
    await waitText("status", new RegExp(`^Signed in as ${ADA.email}\\.$`));
    const { sent, passkey } = await addPasskey("Old browser");
    assert.equal((await own.credentials())[0].isResidentCredential, true);
    assert.equal(sent.credential.id, sent.credential.rawId);
    assert.equal(typeof sent.credential.clientExtensionResults, "object");
    assert.ok(Array.isArray(sent.credential.response.transports), JSON.stringify(sent.credential.response));
    await signOut();
    const res = await passkeySignIn();
    assert.equal(res.status(), 200, await res.text());
    const asserted = res.request().postDataJSON().credential;
    assert.equal(asserted.id, sent.credential.id);
    for (const f of ["clientDataJSON", "authenticatorData", "signature", "userHandle"]) {
      assert.ok(asserted.response[f], `${f} missing: ${JSON.stringify(asserted.response)}`);
    }
    await waitText("status", new RegExp(`^Signed in as ${ADA.email}\\.$`));
    assert.deepEqual((await sessionNow()).amr, ["hwk", "mfa"]);
    await byId(`passkey-remove-${passkey.id}`).click();
    await waitText("status", /^Passkey Old browser removed\.$/);
    await signOut();
  } finally {
    page = main;
    await other.close();
  }
});

test("no uncaught error on the page", () => {
  assert.deepEqual(pageErrors, []);
});
