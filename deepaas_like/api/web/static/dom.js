// Small DOM helpers shared by every view of the page.

/**
 * Make an element: h("a", {href: "#/", class: "x", onclick: fn}, "text", child, [more]).
 * Attributes whose value is null, undefined or false are left out; "on*" are listeners;
 * children may be strings, nodes, arrays of them, or null (skipped).
 */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(element.dataset, value);
    } else {
      element.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(element, children);
  return element;
}

/** Append children (strings, nodes, nested arrays, nulls skipped) to an element. */
export function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** Replace every child of an element. */
export function replace(element, ...children) {
  element.replaceChildren();
  return append(element, children);
}

/** A message box: kind is "error", "info" or "ok"; role=alert for errors (read out). */
export function notice(kind, ...children) {
  return h("div", {class: `notice notice-${kind}`, role: kind === "error" ? "alert" : "status"}, ...children);
}

/** An element's id-safe form of any string (model names, field names). */
export function slug(text) {
  return String(text).replace(/[^A-Za-z0-9_-]/g, "_");
}

/** A duration in seconds as people read it: "850 ms", "12.3 s", "4 min 05 s". */
export function seconds(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "";
  if (value < 1) return `${Math.round(value * 1000)} ms`;
  if (value < 60) return `${value.toFixed(1)} s`;
  const minutes = Math.floor(value / 60);
  return `${minutes} min ${String(Math.round(value % 60)).padStart(2, "0")} s`;
}
