// For admins: block a user, set or clear fault flags, the mesh's health (read-only).
import { api, ApiError } from "../api.js";
import { announce, h, show, statusText } from "../dom.js";

export async function adminView(main, { me }) {
  if (!me.admin) {
    show(main, h("h1", { tabindex: -1 }, "Admin"), h("p", {}, "This page is for admins only."));
    return;
  }
  const health = h("tbody");
  const faults = h("ul");
  const services = h("select", { id: "fault-service" });
  const errorRate = h("input", { type: "number", id: "fault-error-rate", min: 0, max: 1, step: 0.05, value: 0.5 });
  const latency = h("input", { type: "number", id: "fault-latency", min: 0, max: 60000, step: 100, value: 0 });
  const faultMessage = h("p", { role: "status" });
  const user = h("input", { type: "text", id: "block-user", autocomplete: "off", required: true });
  const reason = h("input", { type: "text", id: "block-reason", value: "blocked by an admin" });
  const blockMessage = h("p", { role: "status" });

  async function load() {
    const { data } = await api("/web/api/admin/health");
    show(health, data.instances.map((i) => h("tr", {}, h("td", {}, i.service), h("td", {}, i.instance), h("td", {}, statusText(i.status)))));
    const names = [...new Set(data.instances.map((i) => i.service))];
    const chosen = services.value;
    show(services, names.map((name) => h("option", { value: name, selected: name === chosen }, name)));
    const set = Object.entries(data.faults);
    show(faults, set.length ? set.map(([name, flags]) => h("li", {}, `${name}: ${JSON.stringify(flags)}`)) : [h("li", { class: "muted" }, "No fault flags set.")]);
  }

  async function act(message, action, done) {
    message.className = "";
    try {
      await action();
      message.textContent = done;
      announce(done);
      await load();
    } catch (error) {
      message.className = "error";
      message.textContent = error instanceof ApiError ? error.message : "The request failed.";
    }
  }

  show(main, h("h1", { tabindex: -1 }, "Admin"),
    h("section", { class: "card", "aria-labelledby": "block-title" }, h("h2", { id: "block-title" }, "Block a user"),
      h("p", { class: "muted" }, "Their pending orders are cancelled and their tokens refused (user-events, pub/sub)."),
      h("label", { for: "block-user" }, "User id"), user, h("label", { for: "block-reason" }, "Reason"), reason,
      h("p", {}, h("button", { type: "button", id: "block", onclick: () => act(blockMessage,
        () => api(`/web/api/admin/users/${encodeURIComponent(user.value.trim())}/block`, { method: "POST", body: { reason: reason.value } }),
        `${user.value.trim()} is blocked.`) }, "Block")), blockMessage),
    h("section", { class: "card", "aria-labelledby": "faults-title" }, h("h2", { id: "faults-title" }, "Fault flags"),
      h("p", { class: "muted" }, "What `mesh fault` sets: errors and latency injected into a service's calls, no restart."),
      faults,
      h("div", { class: "row" },
        h("div", {}, h("label", { for: "fault-service" }, "Service"), services),
        h("div", {}, h("label", { for: "fault-error-rate" }, "Error rate (0–1)"), errorRate),
        h("div", {}, h("label", { for: "fault-latency" }, "Added latency (ms)"), latency)),
      h("p", { class: "row" },
        h("button", { type: "button", id: "set-fault", onclick: () => act(faultMessage,
          () => api(`/web/api/admin/faults/${services.value}`, { method: "PUT", body: { errorRate: Number(errorRate.value), latencyMs: Number(latency.value) } }),
          `Fault flags set on ${services.value}.`) }, "Set"),
        h("button", { type: "button", class: "secondary", id: "clear-fault", onclick: () => act(faultMessage,
          () => api(`/web/api/admin/faults/${services.value}`, { method: "DELETE" }),
          `Fault flags cleared on ${services.value}.`) }, "Clear")),
      faultMessage),
    h("section", { class: "card", "aria-labelledby": "health-title" }, h("h2", { id: "health-title" }, "Mesh health"),
      h("table", {}, h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Service"), h("th", { scope: "col" }, "Instance"),
        h("th", { scope: "col" }, "Consul checks"))), health),
      h("p", {}, h("button", { type: "button", class: "secondary", onclick: load }, "Refresh"))));
  await load();
}
