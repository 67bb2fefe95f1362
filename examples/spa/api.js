// A tiny authvault client for browsers: the cookie session, the CSRF header on every write, and
// one refresh (with the HttpOnly refresh cookie) when a call answers 401. It keeps no token
// anywhere: the cookies are HttpOnly, and the CSRF token (not a credential) stays in memory.

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.code = problem?.code;
    this.problem = problem;
  }
}

export function createClient(base) {
  let csrfToken = null;
  let refreshing = null;

  async function csrf(fresh = false) {
    if (!csrfToken || fresh) {
      const res = await fetch(`${base}/api/auth/csrf`, { credentials: "include" });
      if (!res.ok) throw await toError(res);
      csrfToken = (await res.json()).csrfToken;
    }
    return csrfToken;
  }

  async function send(method, path, body, headers = {}) {
    const h = { ...headers };
    if (body !== undefined) h["content-type"] = "application/json";
    if (method !== "GET") h["x-csrf-token"] = await csrf();
    return fetch(`${base}${path}`, {
      method,
      credentials: "include",
      headers: h,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  }

  // POST /api/auth/refresh once, however many calls are waiting for it.
  function refresh() {
    refreshing ??= send("POST", "/api/auth/refresh")
      .then((res) => res.ok)
      .catch(() => false)
      .finally(() => (refreshing = null));
    return refreshing;
  }

  // The raw Response. `auth: false` for sign-in and sign-up, where a 401 means a wrong password.
  async function raw(method, path, body, { auth = true, headers } = {}) {
    let res = await send(method, path, body, headers);
    if (res.status === 403 && method !== "GET") {
      const problem = await res.clone().json().catch(() => null);
      if (problem?.code === "csrf_failed") {
        await csrf(true);
        res = await send(method, path, body, headers);
      }
    }
    if (res.status === 401 && auth) {
      const problem = await res.clone().json().catch(() => null);
      // reauth_required: the session is valid but its sign-in is too old for this call, and a
      // refreshed session keeps that sign-in time, so only signing in again helps.
      if (problem?.code !== "reauth_required" && (await refresh())) {
        res = await send(method, path, body, headers);
      }
    }
    // A CSRF token is bound to the session it was issued with: a new sign-in needs a new one.
    if (!auth && res.ok) csrfToken = null;
    return res;
  }

  // The JSON answer (null for 204), or an ApiError.
  async function call(method, path, body, options) {
    const res = await raw(method, path, body, options);
    if (!res.ok) throw await toError(res);
    return res.status === 204 ? null : res.json();
  }

  return { base, raw, call, refresh };
}

export async function toError(res) {
  const problem = await res.json().catch(() => null);
  return new ApiError(res.status, problem);
}

// Reads a text/event-stream body, calling onEvent(event, data) for each frame as it arrives.
export async function readEvents(res, onEvent) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(event, JSON.parse(data.join("\n")));
    }
  }
}
