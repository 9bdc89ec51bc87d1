// One order: its payment, its notifications and the waterfall of the trace that created it.
import { api, ApiError } from "../api.js";
import { announce, h, money, show, statusText } from "../dom.js";

// Each process sends its spans on its own 5 s timer: the trace grows for a while. Polled until
// it has not grown for STEADY_POLLS polls in a row, or TRACE_WAIT_MS.
const TRACE_POLL_MS = 3000;
const STEADY_POLLS = 4;
const TRACE_WAIT_MS = 60000;

export async function orderView(main, { id, live }) {
  const summary = h("section", { class: "card", "aria-labelledby": "order-title" });
  const events = h("ol");
  const trace = h("section", { class: "card", "aria-labelledby": "trace-title" });
  show(main, h("h1", { tabindex: -1, id: "order-title" }, `Order ${id.slice(0, 8)}`), summary,
    h("section", { class: "card", "aria-labelledby": "events-title" },
      h("h2", { id: "events-title" }, "Notifications"), events), trace);

  let lastStatus = null;
  async function load() {
    const { data } = await api(`/web/api/orders/${id}`);
    const { order, payment, paymentError, notifications } = data;
    if (lastStatus && lastStatus !== order.status) announce(`Order ${id.slice(0, 8)} is now ${order.status}`);
    lastStatus = order.status;
    show(summary,
      h("p", {}, "Status: ", statusText(order.status, "order-status")),
      h("p", {}, `Total: ${money(order.totalPrice, order.currency)} · placed ${new Date(order.createdAt).toLocaleString()}`),
      h("p", {}, `Items: ${order.items.map((i) => `${i.quantity} × ${i.productId}`).join(", ")}`),
      order.statusReason ? h("p", { class: "muted" }, `Reason: ${order.statusReason}`) : null,
      h("h2", {}, "Payment"),
      payment
        ? h("p", { "data-testid": "payment" }, statusText(payment.status.replace("PAYMENT_STATUS_", ""), "payment-status"),
            ` ${money(Number(payment.amount), payment.currency)} · payment ${payment.id.slice(0, 8)}`)
        : h("p", { class: "muted", "data-testid": "payment" }, paymentError ? `Payments cannot answer now (${paymentError}).` : "No payment yet."));
    show(events, notifications.length
      ? notifications.map((n) => h("li", {}, `${new Date(n.createdAt).toLocaleTimeString()} ${n.type}`,
          n.data?.status ? ` → ${n.data.status}` : ""))
      : [h("li", { class: "muted" }, "None yet.")]);
  }

  live.subscribe({ refill: load, message: (message) => (message.data?.orderId === id ? load() : undefined) });
  await load();
  showTrace(trace, id);
}

async function showTrace(section, id) {
  const title = h("h2", { id: "trace-title" }, "Trace");
  const state = h("p", { class: "muted", role: "status" }, "Waiting for the trace's spans to reach Jaeger…");
  show(section, title, state);
  const started = Date.now();
  let shown = -1;
  let steady = 0;
  while (Date.now() - started < TRACE_WAIT_MS && section.isConnected) {
    try {
      const { data } = await api(`/web/api/orders/${id}/trace`);
      if (data.spans.length === shown && ++steady >= STEADY_POLLS) break;
      if (data.spans.length !== shown) steady = 0;
      shown = data.spans.length;
      show(section, title, waterfall(data));
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 404) {
        show(section, title, h("p", { class: "error" }, `The trace cannot be shown: ${error.message}`));
        return;
      }
    }
    await new Promise((resolve) => setTimeout(resolve, TRACE_POLL_MS));
  }
  if (shown < 0) show(section, title, h("p", { class: "muted" }, "Jaeger has no trace of this order."));
}

function waterfall(trace) {
  const total = Math.max(trace.durationUs, 1);
  const rows = trace.spans.map((span) => {
    const bar = h("span", { class: "span-bar" });
    bar.style.left = `${(span.offsetUs / total) * 100}%`;
    bar.style.width = `${(span.durationUs / total) * 100}%`;
    const pad = h("span", { class: "depth-pad" });
    pad.style.width = `${span.depth * 0.75}rem`;
    return h("li", { class: [span.kafka ? "kafka" : "", span.error ? "error" : ""].join(" "), "data-service": span.service },
      h("span", { class: "span-label" }, pad, h("span", { class: "span-service" }, span.service), ` ${span.operation} `,
        span.kafka ? h("span", { class: "tag" }, "Kafka") : null,
        h("span", { class: "muted" }, ` ${(span.durationUs / 1000).toFixed(1)} ms`)),
      h("span", { class: "span-track", "aria-hidden": "true" }, bar));
  });
  return [
    h("p", { class: "muted" }, `${trace.spans.length} spans across ${trace.services.join(", ")} · ${(trace.durationUs / 1000).toFixed(1)} ms · trace ${trace.traceId}`),
    // Only where the deployment's Jaeger has a UI (compose): the native one has none.
    trace.jaegerUi ? h("p", {}, h("a", { href: trace.jaegerUi, target: "_blank", rel: "noopener" }, "Open this trace in Jaeger")) : null,
    h("ol", { class: "waterfall", "aria-label": "Spans, in order" }, rows),
  ];
}
