// The page's one way to the server: every call goes through request(), which adds the API
// key (Authorization: Bearer, as the OpenAPI document's "bearer" scheme says) and turns an
// error answer into an ApiError. URLs are relative to the server's base path: the page is
// at <base-path>/web/, so "v2/models/" is <base-path>/v2/models/.

const KEY_STORAGE = `deepaas_like.key:${new URL("..", document.baseURI).pathname}`;
const listeners = new Set();

/** An error answer: status (0 when the server could not be reached), message, and for a
 * 422 the messages per argument name ({field: ["message", ...]}) in fields. */
export class ApiError extends Error {
  constructor(status, message, fields = null, body = null) {
    super(message);
    this.status = status;
    this.fields = fields;
    this.body = body;
  }
}

/** The API key this page sends (kept in this browser's localStorage for this server). */
export function apiKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

/** Keep (or with "" forget) the API key; views listening with onKeyChange() reload. */
export function setApiKey(key) {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
  for (const listener of listeners) listener(key);
}

/** Call listener(key) whenever the key changes; returns a function that stops it. */
export function onKeyChange(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/** The absolute URL of a server path ("v2/models/") under the page's base path. */
export function url(path) {
  return new URL(path.replace(/^\//, ""), new URL("..", document.baseURI)).href;
}

function headers(extra = {}) {
  const result = new Headers(extra);
  const key = apiKey();
  if (key && !result.has("Authorization")) result.set("Authorization", `Bearer ${key}`);
  return result;
}

/** fetch() of a server path with the key; throws ApiError on a status >= 400 or when the
 * server cannot be reached. options as fetch's (method, body, headers, signal). */
export async function request(path, options = {}) {
  let response;
  try {
    response = await fetch(url(path), {...options, headers: headers(options.headers)});
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, `the server cannot be reached (${error.message})`);
  }
  if (response.status >= 400) throw await errorOf(response);
  return response;
}

/** The ApiError of an error answer: its JSON {"message"} or, for 422, its field messages. */
export async function errorOf(response) {
  const text = await response.text();
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    return new ApiError(response.status, text || response.statusText);
  }
  if (response.status === 422 && body && typeof body === "object" && !("message" in body)) {
    const names = Object.keys(body).join(", ");
    return new ApiError(422, `invalid arguments: ${names}`, body, body);
  }
  const message = (body && body.message) || response.statusText;
  return new ApiError(response.status, message, null, body);
}

/** request() and its JSON body. */
export async function json(path, options = {}) {
  const response = await request(path, {...options, headers: {Accept: "application/json", ...options.headers}});
  return response.status === 204 ? null : response.json();
}

/**
 * Follow a Server-Sent Events stream (the jobs' /events routes) with the key, which an
 * EventSource cannot send: calls onEvent(name, data) for each event (data parsed as JSON
 * when it is JSON) until the stream ends or signal aborts. Resolves when it ends.
 */
export async function events(path, onEvent, signal) {
  const response = await request(path, {headers: {Accept: "text/event-stream"}, signal});
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        dispatch(buffer.slice(0, end), onEvent);
        buffer = buffer.slice(end + 2);
      }
    }
  } catch (error) {
    if (error.name !== "AbortError") throw error;
  } finally {
    reader.releaseLock();
  }
}

// One event block of the text/event-stream format (HTML Living Standard, 9.2.6).
function dispatch(block, onEvent) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") name = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return;
  const text = data.join("\n");
  let parsed = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON: the text itself
  }
  onEvent(name, parsed);
}

let documentPromise = null;

/** The server's OpenAPI document (fetched once per key: with --auth-docs it needs one). */
export function openapi() {
  if (!documentPromise) {
    documentPromise = json("openapi.json").catch((error) => {
      documentPromise = null;
      throw error;
    });
  }
  return documentPromise;
}
onKeyChange(() => {
  documentPromise = null;
});

/** The schema a $ref names in the document ("#/components/schemas/X"), or schema itself. */
export function resolve(document, schema) {
  let current = schema;
  for (let depth = 0; current && current.$ref && depth < 32; depth += 1) {
    current = current.$ref
      .replace(/^#\//, "")
      .split("/")
      .reduce((node, part) => (node ? node[part.replace(/~1/g, "/").replace(/~0/g, "~")] : undefined), document);
  }
  return current || {};
}

/** The operation object of method (lower case) on path ("/v2/models/demo/predict/"), or null. */
export function operation(document, path, method) {
  const item = document.paths && document.paths[path];
  return (item && item[method]) || null;
}

/** Whether the document says the server has API keys (a security scheme is declared). */
export function keysRequired(document) {
  const schemes = document.components && document.components.securitySchemes;
  return Boolean(schemes && Object.keys(schemes).length);
}
