// The one door to the box's JSON API (docs/webui.md 1-2).
//
// Invariants:
// - the CSRF token is kept in this module's memory only (never localStorage or a cookie); every
//   state change (POST, PUT, DELETE) carries it as X-CSRF-Token;
// - a 401 on any call but the login itself means the session is gone: the page goes to login;
// - errors arrive as ApiError with the server's code, so screens translate codes, not prose.

const STATE_CHANGES = new Set(["POST", "PUT", "DELETE"]);

let csrfToken = null;
let unauthorizedHandler = () => {};

export class ApiError extends Error {
  /**
   * `status` 0 means the box did not answer at all. `code` is the JSON `error` member (or
   * "network"/"http"), `detail` the server's plain-English message, `body` the whole answer.
   */
  constructor(status, code, detail, body = null, retryAfterS = null) {
    super(`${status} ${code}`);
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.body = body;
    this.retryAfterS = retryAfterS;
  }
}

export function setCsrfToken(token) {
  csrfToken = typeof token === "string" && token !== "" ? token : null;
}

export function hasSession() {
  return csrfToken !== null;
}

/** Called once by app.js: what to do when the box says the session is gone. */
export function onUnauthorized(handler) {
  unauthorizedHandler = handler;
}

/** Retry-After as seconds (integer form only; the box never sends the date form). */
export function parseRetryAfter(value) {
  if (value === null || !/^\d+$/.test(value.trim())) {
    return null;
  }
  return Number.parseInt(value, 10);
}

async function readBody(response) {
  const type = response.headers.get("Content-Type") ?? "";
  if (!type.includes("application/json")) {
    return null;
  }
  try {
    return await response.json();
  } catch {
    return null; // a truncated answer: treat as no body, the status still tells what happened
  }
}

/**
 * Calls the API. `json` sends a JSON body, `bytes` sends raw bytes as application/octet-stream.
 * `expect401`: a 401 is an answer for the caller (login), not a lost session.
 * Returns the parsed JSON body of a 2xx answer (or null); throws ApiError otherwise.
 */
export async function request(method, path, { json, bytes, expect401 = false } = {}) {
  const headers = { Accept: "application/json" };
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (bytes !== undefined) {
    headers["Content-Type"] = "application/octet-stream";
    body = bytes;
  }
  if (STATE_CHANGES.has(method) && csrfToken !== null) {
    headers["X-CSRF-Token"] = csrfToken;
  }
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body,
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, "network", "");
  }
  const answer = await readBody(response);
  if (response.ok) {
    return answer;
  }
  if (response.status === 401 && !expect401) {
    setCsrfToken(null);
    unauthorizedHandler();
  }
  const code = typeof answer?.error === "string" ? answer.error : "http";
  const detail = typeof answer?.message === "string" ? answer.message : "";
  const retryAfterS = parseRetryAfter(response.headers.get("Retry-After"));
  throw new ApiError(response.status, code, detail, answer, retryAfterS);
}
