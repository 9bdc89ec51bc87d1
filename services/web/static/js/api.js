// The edge's APIs with the in-memory access token; problem+json errors as ApiError.
import { accessToken, refresh } from "./auth.js";

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `Request failed (${status})`);
    this.status = status;
    this.problem = problem;
  }
}

export async function api(path, { method = "GET", body, headers = {} } = {}, retried = false) {
  const sent = { ...headers, Authorization: `Bearer ${accessToken()}` };
  if (body !== undefined) sent["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers: sent,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  // An access token that expired in between: once more with a fresh one.
  if (response.status === 401 && !retried && (await refresh())) {
    return api(path, { method, body, headers }, true);
  }
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data);
  return { status: response.status, data };
}
