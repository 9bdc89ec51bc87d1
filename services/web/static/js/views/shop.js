// The catalogue and the cart: place an order (an Idempotency-Key per attempt; the 202 path,
// Prefer: respond-async, on request).
import { api, ApiError } from "../api.js";
import { announce, h, money, show } from "../dom.js";

// Every unit of every product costs 100 minor units (the orders service's rule).
const UNIT_PRICE = 100;
const CURRENCY = "RUB";
const CATALOGUE = [
  { id: "book", name: "Book" },
  { id: "pen", name: "Pen" },
  { id: "mug", name: "Mug" },
  { id: "notebook", name: "Notebook" },
];
const cart = new Map();

export async function shopView(main, { me, go }) {
  const cartList = h("ul", { "aria-label": "Cart" });
  const message = h("p", { role: "alert" });
  const later = h("input", { type: "checkbox", id: "pay-later" });
  const place = h("button", { type: "button", id: "place-order" }, "Place order");

  function renderCart() {
    const lines = [...cart.entries()].map(([id, quantity]) =>
      h("li", {}, `${quantity} × ${id} `,
        h("button", { type: "button", class: "secondary", "aria-label": `Remove ${id}`,
                      onclick: () => { cart.delete(id); renderCart(); } }, "Remove")));
    const units = [...cart.values()].reduce((sum, q) => sum + q, 0);
    show(cartList, lines.length ? lines : [h("li", { class: "muted" }, "The cart is empty.")]);
    place.disabled = units === 0;
    place.textContent = units ? `Place order (${money(units * UNIT_PRICE, CURRENCY)})` : "Place order";
  }

  const products = CATALOGUE.map((product) => {
    const quantity = h("input", { type: "number", min: 1, max: 99, value: 1, id: `qty-${product.id}` });
    return h("div", { class: "card" },
      h("h2", {}, product.name),
      h("p", { class: "muted" }, `${money(UNIT_PRICE, CURRENCY)} each`),
      h("label", { for: quantity.id }, "Quantity"), quantity,
      h("p", {}, h("button", { type: "button", id: `add-${product.id}`, onclick: () => {
        const count = Math.max(1, Math.min(99, Number.parseInt(quantity.value, 10) || 1));
        cart.set(product.id, (cart.get(product.id) ?? 0) + count);
        renderCart();
        announce(`${count} × ${product.name} added to the cart`);
      } }, `Add ${product.name} to cart`)));
  });

  place.addEventListener("click", async () => {
    place.disabled = true;
    message.className = "";
    message.textContent = "Placing the order…";
    const body = { userId: me.sub, items: [...cart.entries()].map(([productId, quantity]) => ({ productId, quantity })) };
    // One key per attempt: a network retry of this attempt is the same order, never two.
    const key = crypto.randomUUID();
    const headers = { "Idempotency-Key": key, "x-client-trace-id": key };
    if (later.checked) headers.Prefer = "respond-async";
    try {
      const { data } = await sendOnceMore(() => api("/orders", { method: "POST", body, headers }));
      cart.clear();
      go(`#/orders/${data.id}`);
    } catch (error) {
      message.className = "error";
      message.textContent = error instanceof ApiError ? error.message : "The order could not be sent.";
      place.disabled = false;
    }
  });

  renderCart();
  show(main,
    h("h1", { tabindex: -1 }, "Shop"),
    h("div", { class: "grid" }, products),
    h("section", { class: "card", "aria-labelledby": "cart-title" },
      h("h2", { id: "cart-title" }, "Cart"), cartList,
      h("p", {}, h("label", { class: "inline", for: "pay-later" }, later,
        "Pay later: queue the payment (202 Accepted, paid by a worker)")),
      place, message));
}

// A request that never reached an answer (the network) is sent again with the same key.
async function sendOnceMore(send) {
  try {
    return await send();
  } catch (error) {
    if (error instanceof ApiError) throw error;
    return send();
  }
}
