// The page: sign in (OIDC code + PKCE, auth.js), then a hash router over the views; one
// live connection whose messages and reconnects go to the view on screen.
import { api, ApiError } from "./api.js";
import { authorize, completeSignIn, onChange, SignInError, signOut, signedIn } from "./auth.js";
import { h, show } from "./dom.js";
import { connectLive } from "./live.js";
import { adminView } from "./views/admin.js";
import { orderView } from "./views/order.js";
import { ordersView } from "./views/orders.js";
import { shopView } from "./views/shop.js";

const main = document.getElementById("main");
const ORDER_ROUTE = /^#\/orders\/([0-9a-f-]{36})$/;

let me = null;
let subscriber = null;
const live = {
  subscribe(handlers) {
    subscriber = handlers;
  },
};

function signInView(problem) {
  document.getElementById("nav").hidden = true;
  document.getElementById("sign-out").hidden = true;
  show(main,
    h("h1", { tabindex: -1 }, "Sign in"),
    problem ? h("p", { class: "error", role: "alert" }, problem) : null,
    h("p", {}, "Place orders, watch them get paid live, and see the trace of each across the mesh."),
    h("button", { type: "button", id: "sign-in", onclick: () => authorize({ returnTo: location.hash || "#/shop" }) }, "Sign in"));
  main.querySelector("h1").focus();
}

async function route() {
  if (!signedIn()) return;
  const hash = location.hash || "#/shop";
  subscriber = null;
  for (const link of document.querySelectorAll("nav a")) {
    link.toggleAttribute("aria-current", false);
    if (hash.startsWith(link.getAttribute("href"))) link.setAttribute("aria-current", "page");
  }
  const context = { me, live, go: (target) => { location.hash = target; } };
  const order = ORDER_ROUTE.exec(hash);
  try {
    if (order) await orderView(main, { ...context, id: order[1] });
    else if (hash === "#/orders") await ordersView(main, context);
    else if (hash === "#/admin") await adminView(main, context);
    else await shopView(main, context);
  } catch (error) {
    showError(error);
  }
  main.querySelector("h1")?.focus();
}

// A refusal (a blocked user's 403, say) in place of the view: its problem's words, no trace.
function showError(error) {
  show(main, h("h1", { tabindex: -1 }, "Something went wrong"),
    h("p", { class: "error", role: "alert" }, error instanceof ApiError ? error.message : String(error)));
}

async function start() {
  me = (await api("/web/api/me")).data;
  document.getElementById("user").textContent = me.sub;
  document.getElementById("nav").hidden = false;
  document.getElementById("admin-link").hidden = !me.admin;
  const out = document.getElementById("sign-out");
  out.hidden = false;
  out.onclick = () => signOut();
  const state = document.getElementById("live-state");
  state.hidden = false;
  connectLive({
    onMessage: (message) => Promise.resolve(subscriber?.message(message)).catch(showError),
    onOpen: () => subscriber?.refill().catch(() => {}),
    onState: (now) => {
      state.textContent = now === "live" ? "● live" : "○ reconnecting…";
      state.classList.toggle("on", now === "live");
    },
  });
  window.addEventListener("hashchange", route);
  await route();
}

async function boot() {
  onChange((inNow) => { if (!inNow) signInView("Your session has ended. Please sign in again."); });
  if (location.pathname === "/callback") {
    let outcome;
    try {
      outcome = await completeSignIn(new URLSearchParams(location.search));
    } catch (error) {
      history.replaceState(null, "", "/");
      signInView(error instanceof SignInError ? error.message : "Sign-in failed.");
      return;
    }
    // The code and state leave the address bar (and the history) at once.
    history.replaceState(null, "", `/${outcome.returnTo || "#/shop"}`);
    if (outcome.signedOut) {
      signInView();
      return;
    }
    await start();
    return;
  }
  // A fresh page has no token: auth's session may still give one without a login page.
  await authorize({ silent: true, returnTo: location.hash || "#/shop" });
}

boot();
