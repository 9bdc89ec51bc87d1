// "My orders": the list, kept current by the live status changes.
import { api } from "../api.js";
import { h, money, show, statusText } from "../dom.js";

export async function ordersView(main, { me, live }) {
  const body = h("tbody");
  const table = h("table", {},
    h("caption", { class: "visually-hidden" }, "My orders, newest first"),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Order"), h("th", { scope: "col" }, "Placed"),
      h("th", { scope: "col" }, "Total"), h("th", { scope: "col" }, "Status"))), body);
  show(main, h("h1", { tabindex: -1 }, "My orders"), table);

  async function load() {
    const { data } = await api(`/orders?userId=${encodeURIComponent(me.sub)}`);
    data.sort((a, b) => b.createdAt.localeCompare(a.createdAt));
    show(body, data.length ? data.map((order) => h("tr", { "data-order": order.id },
      h("td", {}, h("a", { href: `#/orders/${order.id}` }, order.id.slice(0, 8))),
      h("td", {}, new Date(order.createdAt).toLocaleString()),
      h("td", {}, money(order.totalPrice, order.currency)),
      h("td", {}, statusText(order.status)))) : [h("tr", {}, h("td", { colspan: 4 }, "No orders yet."))]);
  }

  live.subscribe({ refill: load, message: (message) => (message.data?.orderId ? load() : undefined) });
  await load();
}
