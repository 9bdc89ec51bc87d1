// Building the page from data without innerHTML: text is always text, never markup.
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "class") element.className = value;
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

export function show(container, ...children) {
  container.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

const announcer = () => document.getElementById("announcer");

// Screen readers hear what changed without the page moving focus.
export function announce(text) {
  announcer().textContent = text;
}

export function money(minor, currency) {
  return `${(minor / 100).toFixed(2)} ${currency}`;
}

export function statusText(status, testId = "status") {
  return h("span", { class: `status status-${status}`, "data-testid": testId }, status);
}
