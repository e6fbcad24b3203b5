// Small DOM helpers shared by the panels: element building, error and busy states, tables, progress,
// and parameter forms generated from the API's own OpenAPI schema (defaults, ranges, enums).

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export const clear = (el, ...children) => {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return el;
};

let nextId = 0;
export const uid = (prefix) => `${prefix}-${++nextId}`;

// A labelled control: <label for> + the control, in one row.
export function field(label, control, hint) {
  if (!control.id) control.id = uid("f");
  return h("div", { class: "field" }, h("label", { for: control.id }, label), control, hint ? h("small", {}, hint) : null);
}

// Where a panel shows what went wrong: the JSON error's message (and code), announced to screen readers.
export function errorBox() {
  const box = h("div", { class: "error", role: "alert", hidden: true });
  box.show = (error) => {
    // A missing key is asked for once, above the panels (main.js), and not repeated in each panel.
    if (!error || error.code === "missing_api_key") {
      box.hidden = true;
      box.textContent = "";
      return;
    }
    box.hidden = false;
    clear(box, h("strong", {}, error.code ? `${error.code}: ` : "Error: "), error.message || String(error));
  };
  return box;
}

// Run an async action with a button disabled and errors shown in `box`; returns the action's value.
export async function busy(button, box, action) {
  if (box) box.show(null);
  if (button) {
    button.disabled = true;
    button.classList.add("busy");
  }
  try {
    return await action();
  } catch (error) {
    if (error.name === "AbortError") return undefined;
    if (box) box.show(error);
    else console.warn(error);
    return undefined;
  } finally {
    if (button) {
      button.disabled = false;
      button.classList.remove("busy");
    }
  }
}

export function progressBar() {
  const bar = h("progress", { max: 1, value: 0, "aria-label": "progress" });
  const text = h("span", { class: "progress-text" }, "");
  const wrap = h("div", { class: "progress" }, bar, text);
  wrap.update = ({ step = 0, total = 0 } = {}, status = "") => {
    bar.max = Math.max(total, 1);
    bar.value = step;
    text.textContent = `${status}${status && total ? " · " : ""}${total ? `${step} / ${total}` : ""}`;
  };
  return wrap;
}

export function table(columns, rows) {
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c.label)))),
    h("tbody", {}, rows.map((row) => h("tr", {}, columns.map((c) => h("td", { "data-label": c.label }, c.value(row)))))),
  );
}

// A time from the API (ISO 8601) as a person reads it, date and time: "6 Dec 2026, 14:02".
export const when = (iso) => (iso ? new Date(iso).toLocaleString(undefined, { day: "numeric", month: "short", year: "numeric",
  hour: "2-digit", minute: "2-digit" }) : "—");

export const fmt = (value, digits = 3) =>
  typeof value === "number" ? (Number.isInteger(value) ? String(value) : value.toFixed(digits)) : String(value);

// Bytes in words: "512 MiB", "3.4 GiB", "120 KiB".
export function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${fmt(n, 1)} ${units[i]}`;
}

export function metricsList(metrics = {}) {
  const entries = Object.entries(metrics || {});
  if (!entries.length) return null;
  return h("dl", { class: "metrics" }, entries.map(([k, v]) => [h("dt", {}, k), h("dd", { "data-metric": k }, typeof v === "object" ? JSON.stringify(v) : fmt(v, 4))]));
}

// --- parameter forms from the OpenAPI schema of a kind's params -----------------------------------
// `schema` is components.schemas.<Kind>Params; `fixed` names params the panel sets itself (hidden here).
// `main` (optional) names the params shown first; the others go under "more parameters".
export function paramsForm(schema, { fixed = [], values = {}, main = null } = {}) {
  const inputs = {};
  const rows = [];
  const required = new Set(schema.required || []);
  const entries = Object.entries(schema.properties || {});
  entries.sort(([a], [b]) => Number(required.has(b)) - Number(required.has(a))); // what must be given, first
  for (const [name, prop] of entries) {
    if (fixed.includes(name)) continue;
    const types = (prop.anyOf || []).map((p) => p.type).filter((t) => t && t !== "null");
    const type = prop.type || (types.includes("string") ? "string" : types[0]) || "string"; // class: index or label
    const initial = name in values ? values[name] : prop.default;
    let control;
    if (prop.enum) {
      control = h("select", { name }, prop.enum.map((v) => h("option", { value: v, selected: v === initial }, v)));
    } else if (type === "boolean") {
      control = h("input", { type: "checkbox", name, checked: !!initial });
    } else if (type === "integer" || type === "number") {
      control = h("input", { type: "number", name, step: type === "integer" ? 1 : "any", min: prop.minimum, max: prop.maximum,
        value: initial ?? "", placeholder: initial === undefined ? "required" : "" });
    } else {
      const text = initial === undefined || initial === null ? "" : typeof initial === "object" ? JSON.stringify(initial) : initial;
      const defaulted = initial === null || (initial === undefined && !required.has(name)); // a default_factory has no `default`
      control = h("input", { type: "text", name, value: text, placeholder: defaulted ? "(default)" : required.has(name) ? "required" : "" });
      control.dataset.json = type === "array" || type === "object" ? "1" : "";
    }
    if (required.has(name)) control.required = true;
    inputs[name] = { control, type, prop };
    const row = field(required.has(name) ? `${name} *` : name, control, prop.description);
    row.dataset.main = String(!main || main.includes(name) || required.has(name));
    rows.push(row);
  }
  const more = rows.filter((row) => row.dataset.main === "false");
  const form = h("div", {}, h("div", { class: "params" }, rows.filter((row) => row.dataset.main === "true")),
    more.length ? h("details", { class: "more" }, h("summary", {}, `more parameters (${more.length})`), h("div", { class: "params" }, more)) : null);
  form.read = () => {
    const params = {};
    for (const [name, { control, type }] of Object.entries(inputs)) {
      if (control.type === "checkbox") params[name] = control.checked;
      else if (control.value === "") continue;
      else if (type === "integer") params[name] = parseInt(control.value, 10);
      else if (type === "number") params[name] = parseFloat(control.value);
      else if (control.dataset && control.dataset.json) params[name] = JSON.parse(control.value);
      else if (/^-?\d+$/.test(control.value) && (inputs[name].prop.anyOf || []).some((p) => p.type === "integer")) params[name] = parseInt(control.value, 10);
      else params[name] = control.value;
    }
    return params;
  };
  form.set = (name, value) => {
    if (!inputs[name]) return;
    const { control } = inputs[name];
    if (control.type === "checkbox") control.checked = !!value;
    else control.value = typeof value === "object" && value !== null ? JSON.stringify(value) : value ?? "";
  };
  return form;
}
