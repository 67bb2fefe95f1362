// Headless Chromium check of the API reference page (/docs) with the network off.
//
// Needs a running authvault: AUTHVAULT_BROWSER_BASE_URL=http://127.0.0.1:PORT (required).
// The screenshot goes to $AUTHVAULT_BROWSER_OUT/docs.png (default tests/browser/out/).
// Chromium: $AUTHVAULT_BROWSER_CHROMIUM, default /usr/bin/chromium (Debian's package).
//
//   AUTHVAULT_BROWSER_BASE_URL=http://127.0.0.1:18099 node --test tests/browser/
//
// Every request to a host other than 127.0.0.1 / localhost is blocked and recorded; the page
// must render every operation of /openapi.json with no such request, no console error (CSP
// violations and failed loads are console errors) and no uncaught page error.

import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const BASE = process.env.AUTHVAULT_BROWSER_BASE_URL;
if (!BASE) {
  throw new Error(
    "AUTHVAULT_BROWSER_BASE_URL is not set: start authvault and set it to its base URL, " +
      "e.g. AUTHVAULT_BROWSER_BASE_URL=http://127.0.0.1:18099",
  );
}
const LOCAL_HOSTS = new Set(["127.0.0.1", "localhost", "[::1]"]);
const base = new URL(BASE);
if (!LOCAL_HOSTS.has(base.hostname)) {
  throw new Error(`AUTHVAULT_BROWSER_BASE_URL must be a local address, not ${base.hostname}`);
}
const here = path.dirname(fileURLToPath(import.meta.url));
const OUT = path.resolve(process.env.AUTHVAULT_BROWSER_OUT || path.join(here, "out"));
const CHROMIUM = process.env.AUTHVAULT_BROWSER_CHROMIUM || "/usr/bin/chromium";
const RENDER_TIMEOUT_MS = 30_000;

// Operations the page must show whatever else the document holds.
const MUST_SHOW = ["/api/auth/signup", "/api/user/api-keys"];
const METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

const blocked = []; // requests to other hosts, aborted
const requests = []; // every request the page made, for the failure messages
const consoleErrors = [];
const pageErrors = [];
const badResponses = []; // local responses with status >= 400
let context;
let page;
let userDataDir;
let docsResponse;
let renderError;
let screenshot;

before(async () => {
  userDataDir = await mkdtemp(path.join(tmpdir(), "authvault-chromium-"));
  // launchPersistentContext is Playwright's way to give Chromium its --user-data-dir: a fresh
  // temporary profile each run.
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

  await context.route("**/*", (route) => {
    const url = new URL(route.request().url());
    if (url.protocol === "data:" || url.protocol === "blob:" || LOCAL_HOSTS.has(url.hostname)) {
      return route.continue();
    }
    blocked.push(`${route.request().method()} ${url.href}`);
    return route.abort("blockedbyclient");
  });
  context.on("request", (r) => requests.push(`${r.method()} ${r.url()}`));
  context.on("response", (r) => {
    const url = new URL(r.url());
    if (r.status() >= 400 && LOCAL_HOSTS.has(url.hostname)) {
      badResponses.push(`${r.status()} ${r.request().method()} ${r.url()}`);
    }
  });

  page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (msg) => {
    if (msg.type() === "error") {
      const loc = msg.location();
      consoleErrors.push(`${msg.text()}${loc?.url ? ` (${loc.url}:${loc.lineNumber})` : ""}`);
    }
  });
  page.on("pageerror", (err) => pageErrors.push(String(err?.stack || err)));
  page.on("websocket", (ws) => {
    const url = new URL(ws.url());
    if (!LOCAL_HOSTS.has(url.hostname)) blocked.push(`WEBSOCKET ${ws.url()}`);
  });

  try {
    docsResponse = await page.goto(new URL("/docs", base).href, {
      waitUntil: "load",
      timeout: RENDER_TIMEOUT_MS,
    });
    for (const p of MUST_SHOW) {
      await page
        .locator(`.opblock-summary-path[data-path="${p}"]`)
        .first()
        .waitFor({ state: "visible", timeout: RENDER_TIMEOUT_MS });
    }
    // Late requests (fonts, images of the rendered page) count too.
    await page.waitForLoadState("networkidle", { timeout: 10_000 }).catch(() => {});
  } catch (err) {
    renderError = err;
  } finally {
    // Always taken, so that a failed render can be looked at.
    await mkdir(OUT, { recursive: true });
    screenshot = path.join(OUT, "docs.png");
    await page.screenshot({ path: screenshot, fullPage: true });
  }
});

after(async () => {
  await context?.close();
  if (userDataDir) await rm(userDataDir, { recursive: true, force: true });
});

const seen = () => `requests made:\n  ${requests.join("\n  ")}`;

test("/docs answers 200 with HTML", () => {
  assert.ok(docsResponse, `no response for /docs: ${renderError}`);
  assert.equal(docsResponse.status(), 200);
  assert.match(docsResponse.headers()["content-type"] ?? "", /^text\/html/);
});

test("Swagger UI renders every operation of /openapi.json", async () => {
  assert.equal(renderError, undefined, `the operations did not render: ${renderError}\n${seen()}`);
  for (const p of MUST_SHOW) {
    const text = await page.locator(`.opblock-summary-path[data-path="${p}"]`).first().innerText();
    // Swagger UI puts a zero-width space before each '/' so that long paths can wrap.
    assert.equal(text.replace(/\u200b/g, ""), p);
    assert.ok(await page.getByText(p.split("/").pop(), { exact: false }).first().isVisible());
  }
  const doc = await (await page.request.get(new URL("/openapi.json", base).href)).json();
  const expected = new Set();
  for (const [p, item] of Object.entries(doc.paths ?? {})) {
    for (const m of METHODS) if (item[m]) expected.add(`${m.toUpperCase()} ${p}`);
  }
  const shown = new Set(
    await page.$$eval(".opblock", (blocks) =>
      blocks.map((b) => {
        const method = b.querySelector(".opblock-summary-method")?.textContent?.trim();
        const p = b.querySelector(".opblock-summary-path")?.getAttribute("data-path");
        return `${method} ${p}`;
      }),
    ),
  );
  assert.ok(expected.size > 0, "/openapi.json has no operations");
  assert.deepEqual(
    [...expected].filter((op) => !shown.has(op)),
    [],
    "operations of /openapi.json missing from the page",
  );
  assert.equal(
    await page.locator(".swagger-ui .errors-wrapper").count(),
    0,
    "Swagger UI shows an errors box",
  );
});

test("no request left 127.0.0.1", () => {
  assert.deepEqual(blocked, [], `requests to other hosts (blocked):\n  ${blocked.join("\n  ")}`);
});

test("no console error and no page error", () => {
  assert.deepEqual(consoleErrors, [], "console errors");
  assert.deepEqual(pageErrors, [], "uncaught page errors");
});

test("every request to authvault succeeded", () => {
  assert.deepEqual(badResponses, [], `failed responses\n${seen()}`);
});

test("screenshot saved", () => {
  assert.ok(screenshot, "no screenshot was taken");
  console.log(`# screenshot: ${screenshot}`);
});
