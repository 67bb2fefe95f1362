// A small authvault client written against the types that openapi-typescript generates from
// openapi/openapi.json (generated/api.d.ts, made by scripts/test). It is only type-checked
// (`tsc --noEmit`), never run: if the document stops describing what a client needs (a field is
// renamed, a body loses a property, a status or a content type goes), this file stops compiling.

import type { components, paths } from "./generated/api";

type Schemas = components["schemas"];
type Problem = Schemas["Problem"];
type ErrorCode = Schemas["ErrorCode"];

type Method = "get" | "post" | "patch" | "delete";
type Operation<P extends keyof paths, M extends Method> = NonNullable<paths[P][M]>;

/** The JSON request body of an operation (`never` when it takes none). */
type RequestBody<P extends keyof paths, M extends Method> =
  Operation<P, M> extends { requestBody?: { content: { "application/json": infer B } } }
    ? B
    : never;

/** The statuses an operation documents. */
type Status<P extends keyof paths, M extends Method> = keyof Operation<P, M>["responses"] & number;

/** The body of one documented response, by status and content type. */
type ResponseBody<
  P extends keyof paths,
  M extends Method,
  S extends Status<P, M>,
  C extends string = "application/json",
> = Operation<P, M>["responses"][S] extends { content: infer Content }
  ? C extends keyof Content
    ? Content[C]
    : never
  : never;

/** Every success an operation documents, as a tagged union. */
type Success<P extends keyof paths, M extends Method> = {
  [S in Status<P, M>]: S extends 200 | 201 | 202 | 204
    ? { ok: true; status: S; body: S extends 204 ? undefined : ResponseBody<P, M, S> }
    : never;
}[Status<P, M>];

/** The error statuses of an operation whose documented answer is not a problem+json `Problem`. */
type NotAProblem<P extends keyof paths, M extends Method> = {
  [S in Status<P, M>]: S extends 200 | 201 | 202 | 204 | 302
    ? never
    : Operation<P, M>["responses"][S] extends { content: { "application/problem+json": Problem } }
      ? never
      : `${M} ${P} ${S}`;
}[Status<P, M>];

/** Every error status of every operation is documented as problem+json: this fails to compile
 * and names the culprits (`"post /api/... 413"`) otherwise. */
type Undocumented = {
  [P in keyof paths]: {
    [M in Method]: paths[P][M] extends { responses: unknown } ? NotAProblem<P, M> : never;
  }[Method];
}[keyof paths];
export const everyErrorIsAProblem: [Undocumented] extends [never] ? true : Undocumented = true;

/** An error answer of an operation: one of its documented statuses, with a `Problem`. */
type Failure<P extends keyof paths, M extends Method> = {
  [S in Status<P, M>]: S extends 200 | 201 | 202 | 204 | 302
    ? never
    : { ok: false; status: S; body: ResponseBody<P, M, S, "application/problem+json"> };
}[Status<P, M>];

type Result<P extends keyof paths, M extends Method> = Success<P, M> | Failure<P, M>;

class AuthvaultClient {
  private token: string | undefined;

  constructor(private readonly baseUrl: string) {}

  private async call<P extends keyof paths, M extends Method>(
    method: M,
    path: P,
    body?: RequestBody<P, M>,
  ): Promise<Result<P, M>> {
    const headers: Record<string, string> = { accept: "application/json" };
    if (this.token !== undefined) headers["authorization"] = `Bearer ${this.token}`;
    const init: RequestInit = { method: method.toUpperCase(), headers };
    if (body !== undefined) {
      headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const res = await fetch(`${this.baseUrl}${path}`, init);
    const text = await res.text();
    const parsed: unknown = text === "" ? undefined : JSON.parse(text);
    return { ok: res.ok, status: res.status, body: parsed } as Result<P, M>;
  }

  async signup(body: Schemas["SignupRequest"]): Promise<Schemas["AuthResponse"]> {
    const res = await this.call("post", "/api/auth/signup", body);
    if (!res.ok) throw new ApiFailure(res.body);
    // 201 is the only documented success.
    const status: 201 = res.status;
    void status;
    this.token = res.body.session.accessToken;
    return res.body;
  }

  async signin(email: string, password: string): Promise<Schemas["SessionBody"]> {
    const res = await this.call("post", "/api/auth/signin", { email, password });
    if (!res.ok) throw new ApiFailure(res.body);
    // With two-factor sign-in on, the answer is the second step's token instead.
    if ("mfaRequired" in res.body) {
      const methods: ("totp" | "recoveryCode")[] = res.body.methods;
      throw new Error(`a second factor is required (${methods.join(", ")})`);
    }
    const session: Schemas["SessionBody"] = res.body.session;
    const bearer: "Bearer" = session.tokenType;
    void bearer;
    this.token = session.accessToken;
    return session;
  }

  async session(): Promise<{ user: Schemas["UserBody"]; expires: Date }> {
    const res = await this.call("get", "/api/auth/session");
    if (!res.ok) {
      // The only documented failures of the session endpoint.
      const status: 401 | 500 | 503 = res.status;
      void status;
      throw new ApiFailure(res.body);
    }
    return { user: res.body.user, expires: new Date(res.body.expires) };
  }

  async apiKeys(): Promise<Schemas["ApiKeysMap"]> {
    const res = await this.call("get", "/api/user/api-keys");
    if (!res.ok) throw new ApiFailure(res.body);
    return res.body.apiKeys;
  }

  async setApiKeys(update: Schemas["UpdateApiKeysRequest"]): Promise<Schemas["ApiKeysMap"]> {
    const res = await this.call("post", "/api/user/api-keys", update);
    if (!res.ok) throw new ApiFailure(res.body);
    return res.body.apiKeys;
  }

  async removeApiKey(provider: keyof Schemas["ApiKeysMap"]): Promise<void> {
    const path = `/api/user/api-keys/${provider}` as "/api/user/api-keys/{provider}";
    const res = await this.call("delete", path);
    if (!res.ok) throw new ApiFailure(res.body);
    const nothing: undefined = res.body;
    return nothing;
  }

  async generate(request: Schemas["GenerateRequest"] & { stream?: false | null }) {
    const res = await this.call("post", "/api/generate", request);
    if (res.ok) {
      const answer: Schemas["GenerateResponse"] = res.body;
      return { code: answer.code, tokens: answer.usage.completionTokens };
    }
    switch (res.status) {
      case 400:
        return retryable(res.body, res.body.code === "missing_api_key");
      case 429:
        return retryable(res.body, true);
      case 502:
      case 504:
        return retryable(res.body, true);
      default:
        throw new ApiFailure(res.body);
    }
  }

  async signout(everywhere = false): Promise<void> {
    const res = await this.call("post", "/api/auth/signout", { everywhere });
    if (!res.ok) throw new ApiFailure(res.body);
    this.token = undefined;
  }
}

class ApiFailure extends Error {
  readonly code: ErrorCode;
  readonly fields: Readonly<Record<string, readonly string[]>>;

  constructor(problem: Problem) {
    super(`${problem.status} ${problem.title}: ${problem.detail}`);
    this.code = problem.code;
    this.fields = problem.errors ?? {};
  }
}

function retryable(problem: Problem, retry: boolean) {
  return { error: problem.code, detail: problem.detail, retry };
}

/** The masked view of every provider; `null` where no key is stored. */
function describeKeys(keys: Schemas["ApiKeysMap"]): string[] {
  const providers: (keyof Schemas["ApiKeysMap"])[] = ["togetherAI", "codeRabbit", "oumi", "kestra"];
  return providers.map((p) => {
    const key = keys[p];
    return key === null ? `${p}: none` : `${p}: ${key.masked} (since ${key.updatedAt})`;
  });
}

export async function example(): Promise<string[]> {
  const client = new AuthvaultClient("http://127.0.0.1:8080");
  const { user } = await client.signup({
    name: "Ada Lovelace",
    email: "ada@example.com",
    password: "correct horse battery",
  });
  const providers: ("credentials" | "github" | "google" | "passkey" | "email")[] = user.providers;
  const image: string | null = user.image;
  void providers;
  void image;
  await client.signin("ada@example.com", "correct horse battery");
  const { expires } = await client.session();
  void expires;
  await client.setApiKeys({ togetherAI: "tgp_v1_0123456789abcdefghijklmnop", oumi: null });
  await client.removeApiKey("kestra");
  const generated = await client.generate({ prompt: "Reverse a string", language: "rust", maxTokens: 256 });
  void generated;
  await client.signout(true);
  return describeKeys(await client.apiKeys());
}

// The generated types are precise, not `any`: each of these must be a type error (tsc fails on
// a `@ts-expect-error` that has nothing to expect).
export function mistakes(keys: Schemas["ApiKeysMap"], problem: Problem): unknown[] {
  // @ts-expect-error a sign-up needs a password
  const noPassword: Schemas["SignupRequest"] = { name: "Ada", email: "ada@example.com" };
  // @ts-expect-error no such provider in the vault
  const unknownProvider: Schemas["UpdateApiKeysRequest"] = { openai: "sk-1" };
  // @ts-expect-error a stored key may be null
  const masked: string = keys.togetherAI.masked;
  // @ts-expect-error codes are the documented ones only
  const code: ErrorCode = "teapot";
  // @ts-expect-error a problem's code is an ErrorCode, not any string
  const other: "nope" = problem.code;
  // @ts-expect-error the session endpoint documents no 404
  const missing: ResponseBody<"/api/auth/session", "get", 404, "application/problem+json"> = problem;
  return [noPassword, unknownProvider, masked, code, other, missing];
}
