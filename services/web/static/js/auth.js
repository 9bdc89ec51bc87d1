// OIDC authorization code + PKCE (RFC 7636) with the auth service, for the public client
// shopmesh-web. Tokens live in this module's memory only: never in storage, never in a URL
// (but the WebSocket's access_token parameter, on its own route). A reload signs in again
// silently (prompt=none) with auth's session cookie. The PKCE verifier, state and nonce stay
// in sessionStorage for the redirect round trip only, and are removed when it ends.

const CLIENT_ID = "shopmesh-web";
const FLOW_KEY = "shopmesh.signin";
const REFRESH_MARGIN_S = 30;

let tokens = null;
let refreshTimer = null;
const listeners = new Set();

export const redirectUri = () => `${location.origin}/callback`;

function base64url(bytes) {
  let text = "";
  for (const byte of new Uint8Array(bytes)) text += String.fromCharCode(byte);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomText(bytes = 32) {
  return base64url(crypto.getRandomValues(new Uint8Array(bytes)));
}

async function challengeOf(verifier) {
  return base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
}

function claimsOf(jwt) {
  const payload = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
  return JSON.parse(decodeURIComponent(escape(atob(payload))));
}

export class SignInError extends Error {}

export function onChange(listener) {
  listeners.add(listener);
}

export function signedIn() {
  return tokens !== null;
}

export function accessToken() {
  return tokens?.access ?? null;
}

// To auth's authorization endpoint; back at /callback. `silent`: no login page (prompt=none).
export async function authorize({ silent = false, returnTo = "#/shop" } = {}) {
  const flow = { verifier: randomText(), state: randomText(16), nonce: randomText(16), silent, returnTo };
  sessionStorage.setItem(FLOW_KEY, JSON.stringify(flow));
  const query = new URLSearchParams({
    response_type: "code",
    client_id: CLIENT_ID,
    redirect_uri: redirectUri(),
    scope: "openid",
    state: flow.state,
    nonce: flow.nonce,
    code_challenge: await challengeOf(flow.verifier),
    code_challenge_method: "S256",
  });
  if (silent) query.set("prompt", "none");
  location.assign(`/auth/authorize?${query}`);
}

// The end of the round trip: the code for tokens. {returnTo, signedOut} or SignInError.
export async function completeSignIn(query) {
  const saved = sessionStorage.getItem(FLOW_KEY);
  sessionStorage.removeItem(FLOW_KEY);
  const flow = saved ? JSON.parse(saved) : null;
  if (!flow || query.get("state") !== flow.state) {
    throw new SignInError("This sign-in answer belongs to no sign-in this page started. Please sign in again.");
  }
  const error = query.get("error");
  if (error) {
    if (flow.silent) return { signedOut: true, returnTo: flow.returnTo };
    throw new SignInError(query.get("error_description") || `Sign-in failed: ${error}`);
  }
  const answer = await tokenRequest({
    grant_type: "authorization_code",
    code: query.get("code") ?? "",
    redirect_uri: redirectUri(),
    client_id: CLIENT_ID,
    code_verifier: flow.verifier,
  });
  if (!answer.id_token || claimsOf(answer.id_token).nonce !== flow.nonce) {
    throw new SignInError("The sign-in answer's ID token does not carry this sign-in's nonce.");
  }
  accept(answer);
  return { signedOut: false, returnTo: flow.returnTo };
}

async function tokenRequest(form) {
  let response;
  try {
    response = await fetch("/auth/token", {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams(form),
    });
  } catch {
    throw new SignInError("The sign-in service could not be reached.");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new SignInError(body.error_description || body.detail || `Sign-in refused (${response.status}).`);
  }
  return body;
}

function accept(answer) {
  tokens = { access: answer.access_token, refresh: answer.refresh_token };
  clearTimeout(refreshTimer);
  const inS = Math.max(5, (answer.expires_in ?? 300) - REFRESH_MARGIN_S);
  refreshTimer = setTimeout(() => refresh().catch(() => {}), inS * 1000);
  for (const listener of listeners) listener(true);
}

// A new access token for the refresh token (rotated: the old one is spent). False when the
// session is over: the page is signed out.
export async function refresh() {
  if (!tokens?.refresh) return false;
  try {
    accept(await tokenRequest({ grant_type: "refresh_token", refresh_token: tokens.refresh, client_id: CLIENT_ID }));
    return true;
  } catch {
    forget();
    return false;
  }
}

function forget() {
  tokens = null;
  clearTimeout(refreshTimer);
  for (const listener of listeners) listener(false);
}

// Revoke the refresh token, forget everything, end auth's session; back to the page.
export async function signOut() {
  const refreshToken = tokens?.refresh;
  forget();
  if (refreshToken) {
    await fetch("/auth/revoke", {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ token: refreshToken, client_id: CLIENT_ID }),
    }).catch(() => {});
  }
  const query = new URLSearchParams({ post_logout_redirect_uri: `${location.origin}/`, state: randomText(16) });
  location.assign(`/auth/logout?${query}`);
}
