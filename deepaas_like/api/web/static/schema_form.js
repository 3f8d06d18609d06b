// A form generated from an OpenAPI schema object (a plugin's predict or train arguments, as
// /openapi.json documents them from its marshmallow fields): one control per property, its
// default, range and description, and room beside it for the server's 422 messages.
import {resolve} from "./api.js";
import {h, replace, slug} from "./dom.js";

/** The media types a file argument takes, from its description, as deepaas_ui reads it
 * ("image", "video" or "audio" in the description; several or none: any file). */
export function fileKind(schema) {
  const text = String(schema.description || "").toLowerCase();
  const kinds = ["image", "video", "audio"].filter((kind) => text.includes(kind));
  return kinds.length === 1 ? kinds[0] : null;
}

/**
 * Build the form of `schema` (an object schema, or a $ref to one, in `document`).
 * options.omit: property names left out (e.g. "accept"); options.prefix: id prefix.
 * Returns {element, fields, formData(), showErrors(messages), clearErrors()}:
 * formData() gives a FormData of the filled fields (empty optional ones are left for the
 * server's defaults); jsonBody() the same as a JSON object, typed as the schema says (for an
 * application/json request body; files are left out); showErrors({name: ["message"]}) writes each message beside its field
 * and returns the names that have no field here.
 */
export function buildForm(document, schema, options = {}) {
  const object = resolve(document, schema);
  const required = new Set(object.required || []);
  const omit = new Set(options.omit || []);
  const prefix = options.prefix || "arg";
  const fields = new Map();
  const rows = [];
  for (const [name, property] of Object.entries(object.properties || {})) {
    if (omit.has(name)) continue;
    const field = buildField(document, name, resolve(document, property), required.has(name), `${prefix}-${slug(name)}`);
    fields.set(name, field);
    rows.push(field.row);
  }
  const element = h("div", {class: "schema-form"}, rows);
  return {
    element,
    fields,
    formData: () => {
      const data = new FormData();
      for (const [name, field] of fields) field.append(data, name);
      return data;
    },
    jsonBody: () => jsonBody(fields),
    showErrors: (messages) => showErrors(fields, messages),
    clearErrors: () => {
      for (const field of fields.values()) field.setError([]);
    },
  };
}

function buildField(document, name, schema, required, id) {
  const control = controlOf(document, schema, id, required, name);
  const hint = schema.description ? h("p", {class: "field-hint", id: `${id}-hint`}, schema.description) : null;
  const error = h("p", {class: "field-error", id: `${id}-error`, "aria-live": "polite"});
  control.input.setAttribute("aria-describedby", [hint ? `${id}-hint` : null, `${id}-error`].filter(Boolean).join(" "));
  if (required) control.input.setAttribute("aria-required", "true");
  const label = h("label", {for: id}, name, required ? h("span", {class: "required", title: "required"}, " *") : null, rangeText(schema));
  const row = h("div", {class: "field", dataset: {field: name}}, label, control.element, hint, error);
  return {
    row,
    input: control.input,
    schema,
    append: control.append,
    setError(messages) {
      error.textContent = messages.join(" ");
      row.classList.toggle("invalid", messages.length > 0);
      control.input.setAttribute("aria-invalid", messages.length ? "true" : "false");
    },
  };
}

function rangeText(schema) {
  const low = schema.minimum !== undefined ? `${schema.minimum}${schema.exclusiveMinimum ? " <" : " ≤"}` : "";
  const high = schema.maximum !== undefined ? `${schema.exclusiveMaximum ? "< " : "≤ "}${schema.maximum}` : "";
  if (!low && !high) return null;
  return h("span", {class: "range"}, ` (${[low, "value", high].filter(Boolean).join(" ")})`);
}

// The control of one property: {element, input, append(formData, name)}.
function controlOf(document, schema, id, required, name) {
  if (schema.format === "binary") return fileControl(schema, id, required);
  if (schema.enum) return selectControl(schema, id, required);
  if (schema.type === "boolean") return booleanControl(schema, id);
  if (schema.type === "integer" || schema.type === "number") return numberControl(schema, id, required, name);
  if (schema.type === "array") return listControl(document, schema, id, required);
  if (schema.type === "object") return jsonControl(schema, id, required);
  return textControl(schema, id, required, name);
}

function single(input, toValue = (element) => element.value) {
  return {
    element: input,
    input,
    append(data, name) {
      const value = toValue(input);
      if (value !== "" && value !== null && value !== undefined) data.append(name, value);
    },
  };
}

// A file picker with what it takes (image/*, audio/*, video/*) and a preview of the chosen
// file, so a person sees what will be sent: the image, or a player for audio and video.
function fileControl(schema, id, required) {
  const kind = fileKind(schema);
  const input = h("input", {id, type: "file", accept: kind ? `${kind}/*` : null, required, dataset: {kind: kind || "file"}});
  const preview = h("div", {class: "file-preview", id: `${id}-preview`, "aria-live": "polite"});
  let previewURL = null;
  input.addEventListener("change", () => {
    if (previewURL) URL.revokeObjectURL(previewURL);
    previewURL = null;
    const file = input.files[0];
    if (!file) return void replace(preview);
    const media = mediaKind(file.type);
    if (media) previewURL = URL.createObjectURL(file);
    replace(preview, filePreview(media, previewURL, file), h("span", {class: "file-facts"}, `${file.name} · ${bytesText(file.size)}`));
  });
  return {
    element: h("div", {class: "file-control"}, input, preview),
    input,
    append(data, name) {
      if (input.files.length) data.append(name, input.files[0], input.files[0].name);
    },
  };
}

function filePreview(media, address, file) {
  if (media === "image") return h("img", {src: address, alt: `preview of ${file.name}`});
  if (media === "audio") return h("audio", {src: address, controls: true, "aria-label": `preview of ${file.name}`});
  if (media === "video") return h("video", {src: address, controls: true, muted: true, "aria-label": `preview of ${file.name}`});
  return null;
}

/** "image", "audio" or "video" for a media type ("image/png"), else null. */
export function mediaKind(mediaType) {
  const top = String(mediaType || "").split("/")[0].toLowerCase();
  return ["image", "audio", "video"].includes(top) ? top : null;
}

/** A size in bytes as people read it: "830 B", "12.4 kB", "3.1 MB". */
export function bytesText(size) {
  if (size < 1000) return `${size} B`;
  if (size < 1e6) return `${(size / 1e3).toFixed(1)} kB`;
  return `${(size / 1e6).toFixed(1)} MB`;
}

function selectControl(schema, id, required) {
  const input = h(
    "select",
    {id, required},
    required && schema.default !== undefined ? null : h("option", {value: ""}, "—"),
    schema.enum.map((value) => h("option", {value: String(value), selected: value === schema.default}, String(value))),
  );
  return single(input);
}

function booleanControl(schema, id) {
  const input = h("input", {id, type: "checkbox", checked: schema.default === true});
  return single(input, (element) => (element.checked ? "true" : "false"));
}

// A number, with a slider beside it when both ends of its range are known (as Gradio draws a
// bounded integer): the number box stays the labelled control the form reads.
function numberControl(schema, id, required, name) {
  const integer = schema.type === "integer";
  const input = h("input", {
    id,
    type: "number",
    inputmode: integer ? "numeric" : "decimal",
    step: integer ? "1" : "any",
    min: schema.exclusiveMinimum ? null : schema.minimum,
    max: schema.exclusiveMaximum ? null : schema.maximum,
    value: schema.default ?? null,
    required,
  });
  // A slider helps over a span a hand can pick from (not a seed's 2**53).
  const bounded = integer && !schema.exclusiveMinimum && !schema.exclusiveMaximum && schema.maximum - schema.minimum <= SLIDER_SPAN;
  if (!bounded) return single(input);
  const slider = h("input", {type: "range", min: schema.minimum, max: schema.maximum, step: 1, value: schema.default ?? schema.minimum, "aria-label": `${name} (slider)`, tabindex: "-1"});
  slider.addEventListener("input", () => {
    input.value = slider.value;
  });
  input.addEventListener("input", () => {
    if (input.value !== "") slider.value = input.value;
  });
  return {...single(input), element: h("div", {class: "number-control"}, input, slider)};
}

// Free text: a text area for what is written in sentences (a text to classify, a prompt),
// a one-line box for the rest.
const SLIDER_SPAN = 10000;

function textControl(schema, id, required, name) {
  const type = {date: "date", "date-time": "datetime-local", password: "password", email: "email", uri: "url"}[schema.format] || "text";
  const prose = type === "text" && !schema.enum && (PROSE_NAME.test(name) || schema.maxLength > 200);
  if (prose) {
    const input = h("textarea", {id, rows: 3, required, minlength: schema.minLength, maxlength: schema.maxLength}, schema.default ?? "");
    return single(input);
  }
  // A password argument is a secret for the model, not this page's login: never autofilled.
  const autocomplete = type === "password" ? "new-password" : null;
  const input = h("input", {id, type, value: schema.default ?? null, required, minlength: schema.minLength, maxlength: schema.maxLength, autocomplete});
  return single(input);
}

// Argument names whose values are sentences rather than words.
const PROSE_NAME = /(^|_)(text|texts|prompt|sentences?|question|query|caption)$/i;

function jsonControl(schema, id, required) {
  const value = schema.default === undefined ? null : JSON.stringify(schema.default);
  const input = h("textarea", {id, rows: 3, required, placeholder: "JSON object"}, value ?? "");
  return single(input);
}

// A list: one form part per item (as webargs reads a multipart list), typed as a
// comma-separated line; items with choices are a multiple select.
function listControl(document, schema, id, required) {
  const items = resolve(document, schema.items || {});
  if (items.enum) {
    const input = h(
      "select",
      {id, multiple: true, required},
      items.enum.map((value) => h("option", {value: String(value), selected: (schema.default || []).includes(value)}, String(value))),
    );
    return {
      element: input,
      input,
      append(data, name) {
        for (const option of input.selectedOptions) data.append(name, option.value);
      },
    };
  }
  const value = Array.isArray(schema.default) ? schema.default.join(", ") : null;
  const input = h("input", {id, type: "text", value, required, placeholder: "comma-separated values"});
  return {
    element: input,
    input,
    append(data, name) {
      const text = input.value.trim();
      if (!text) return;
      for (const part of text.split(",")) data.append(name, part.trim());
    },
  };
}

function showErrors(fields, messages) {
  const unplaced = [];
  for (const field of fields.values()) field.setError([]);
  for (const [name, value] of Object.entries(messages || {})) {
    const field = fields.get(name);
    const list = flatten(value);
    if (field) field.setError(list);
    else unplaced.push(`${name}: ${list.join(" ")}`);
  }
  const first = [...fields.values()].find((field) => field.row.classList.contains("invalid"));
  if (first) first.input.focus();
  return unplaced;
}

// A field's messages: a list of strings, or nested (list items, {index: [...]}) flattened.
function flatten(value) {
  if (Array.isArray(value)) return value.flatMap(flatten);
  if (value && typeof value === "object") return Object.entries(value).flatMap(([key, inner]) => flatten(inner).map((m) => `${key}: ${m}`));
  return [String(value)];
}

// The filled fields as a JSON object, each value typed by its schema (numbers, booleans,
// lists, objects written as JSON), for a request body of application/json.
function jsonBody(fields) {
  const data = new FormData();
  for (const [name, field] of fields) field.append(data, name);
  const body = {};
  for (const [name, field] of fields) {
    const values = data.getAll(name).filter((value) => typeof value === "string");
    if (!values.length) continue;
    if (field.schema.type === "array") body[name] = values.map((value) => typed(field.schema.items || {}, value));
    else body[name] = typed(field.schema, values[0]);
  }
  return body;
}

function typed(schema, text) {
  if (schema.type === "integer" || schema.type === "number") return text.trim() === "" || Number.isNaN(Number(text)) ? text : Number(text);
  if (schema.type === "boolean") return text === "true";
  if (schema.type === "object") {
    try {
      return JSON.parse(text);
    } catch {
      return text; // the server says what is wrong with it, beside the field
    }
  }
  return text;
}
