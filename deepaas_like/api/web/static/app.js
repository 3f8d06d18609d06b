// The page: the API key, the router (views by URL hash) and the models' overview. Each
// other view lives in its own module and exports `routes`: [[RegExp on the hash, render]],
// render(main, params: string[], signal: AbortSignal) drawing into main; the signal aborts
// when the person leaves the view (event streams stop then).
import {ApiError, apiKey, json, keysRequired, onKeyChange, openapi, request, setApiKey} from "./api.js";
import {h, notice, replace} from "./dom.js";
import {baseName, modelHash, modelHeader, modelPath} from "./model_nav.js";
import {routes as predictRoutes} from "./predict.js";
import {routes as trainingRoutes} from "./trainings.js";
import {routes as versionRoutes} from "./versions.js";

const main = document.getElementById("main");
const keyForm = document.getElementById("key-form");
const keyInput = document.getElementById("api-key");
const keyStatus = document.getElementById("key-status");
const forgetKey = document.getElementById("forget-key");
const keyEntry = document.getElementById("key-entry");
const modelsNav = document.getElementById("models-nav");

const ROUTES = [
  [/^#?\/?$/, modelsView],
  [/^#\/models\/([^/]+)\/?$/, modelView],
  ...predictRoutes,
  ...trainingRoutes,
  ...versionRoutes,
];

let current = null;

async function show() {
  if (current) current.abort();
  current = new AbortController();
  const {signal} = current;
  const hash = location.hash || "#/";
  const found = ROUTES.map(([pattern, render]) => [hash.match(pattern), render]).find(([match]) => match);
  replace(main, h("p", {class: "loading"}, "Loading…"));
  try {
    const document = await ready();
    if (!document || signal.aborted) return;
    drawModelsNav(document);
    if (!found) {
      replace(main, notice("error", `Nothing here: ${hash}. `, h("a", {href: "#/"}, "See the models")));
      return;
    }
    const [match, render] = found;
    await render(main, match.slice(1).map((part) => (part === undefined ? undefined : decodeURIComponent(part))), signal);
  } catch (error) {
    if (error.name === "AbortError") return;
    replace(main, notice("error", error.message || String(error)));
    if (!(error instanceof ApiError)) console.warn(error);
  }
}

// The document once the key question is settled; null when the page must wait for a key
// (it then shows the key form and nothing of the models).
async function ready() {
  let document;
  try {
    document = await openapi();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return askForKey(apiKey() ? "The server refused this key." : "");
    throw error;
  }
  if (!keysRequired(document)) {
    keyForm.hidden = true;
    return document;
  }
  keyForm.hidden = false;
  if (!apiKey()) return askForKey("");
  const refused = await keyRefused(document);
  if (refused) return askForKey(refused);
  // Accepted: the header says so in one line; the entry comes back with "Forget key".
  keyEntry.hidden = true;
  keyStatus.textContent = "API key in use";
  forgetKey.hidden = false;
  return document;
}

// Check the key on the first route that needs one and lists something (GET, no uuid).
async function keyRefused(document) {
  for (const [path, item] of Object.entries(document.paths)) {
    if (item.get && item.get.security && item.get.security.length && !path.includes("{")) {
      try {
        await request(`${path.replace(/^\//, "")}?limit=1`, {headers: {Accept: "application/json"}});
        return "";
      } catch (error) {
        if (error instanceof ApiError && error.status === 401) return "The server refused this key.";
        return "";
      }
    }
  }
  return "";
}

function askForKey(message) {
  keyForm.hidden = false;
  keyEntry.hidden = false;
  forgetKey.hidden = !apiKey();
  keyStatus.textContent = message;
  replace(modelsNav);
  replace(
    main,
    h("h1", {}, "API key needed"),
    notice(message ? "error" : "info", message || "This server needs an API key. Enter it above to see its models."),
  );
  keyInput.focus();
  return null;
}

keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  setApiKey(keyInput.value.trim());
  keyInput.value = "";
});
forgetKey.addEventListener("click", () => setApiKey(""));
onKeyChange(() => show());
window.addEventListener("hashchange", show);

function drawModelsNav(document) {
  const names = Object.keys(document.paths)
    .map((path) => path.match(/^\/v2\/models\/([^/{}]+)\/$/))
    .filter(Boolean)
    .map((match) => match[1])
    .filter((name) => !name.includes("@")); // a version is reached from its model's Versions tab
  replace(modelsNav, names.map((name) => h("a", {href: modelHash(name)}, name)));
}

// "#/": every model with its metadata, state and pages.
async function modelsView(target, params, signal) {
  const [listing, state] = await Promise.all([json("v2/models/", {signal}), workersState(signal)]);
  const document = await openapi();
  const cards = listing.models.filter((model) => !String(model.id || model.name).includes("@"));
  replace(
    target,
    h("h1", {}, "Models"),
    cards.length ? null : notice("info", "This server serves no model."),
    h("div", {class: "cards"}, cards.map((model) => modelCard(document, model, state))),
  );
}

function modelCard(document, model, state) {
  const name = model.id || model.name;
  return h(
    "article",
    {class: "card", "aria-labelledby": `model-${name}`},
    h("h2", {id: `model-${name}`}, h("a", {href: modelHash(name)}, name)),
    model.description ? h("p", {}, summary(String(model.description))) : null,
    model.error ? notice("error", `metadata: ${model.error.message}`) : null,
    stateLine(state, name),
    h(
      "p",
      {class: "actions"},
      document.paths[modelPath(name, "predict/")] ? h("a", {class: "button", href: modelHash(name, "predict")}, "Predict") : null,
      document.paths[modelPath(name, "train/")] ? h("a", {class: "button", href: modelHash(name, "trainings")}, "Train") : null,
      document.paths[modelPath(name, "versions/")] ? h("a", {class: "button", href: modelHash(name, "versions")}, "Versions") : null,
    ),
  );
}

// A card shows a description's first sentence or so; the model's page shows all of it.
function summary(text, limit = 220) {
  const line = text.split(/\n\s*\n/)[0].trim();
  return line.length <= limit ? line : `${line.slice(0, line.lastIndexOf(" ", limit)).trimEnd()}…`;
}

// "#/models/{name}": metadata in full, workers' state.
async function modelView(target, [name], signal) {
  const document = await openapi();
  const [model, state] = await Promise.all([json(`v2/models/${encodeURIComponent(name)}/`, {signal}), workersState(signal)]);
  replace(
    target,
    modelHeader(document, baseName(name), "overview"),
    stateLine(state, name),
    await versionsLine(document, name, signal),
    h("h2", {}, "Metadata"),
    metadataList(model),
  );
}

// "3 versions, version 2 promoted" with a link to them, for a model that makes versions.
async function versionsLine(document, name, signal) {
  if (!document.paths[modelPath(name, "versions/")] || name.includes("@")) return null;
  const listing = await json(`v2/models/${encodeURIComponent(name)}/versions/`, {signal}).catch(() => null);
  if (!listing) return null;
  const count = (listing.versions || []).length;
  const promoted = listing.promoted_version ? `, version ${listing.promoted_version} promoted` : ", none promoted";
  return h("p", {class: "state"}, h("a", {href: modelHash(name, "versions")}, `${count} version${count === 1 ? "" : "s"}`), count ? promoted : "");
}

function metadataList(model) {
  return h(
    "dl",
    {class: "metadata"},
    Object.entries(model).map(([key, value]) => [h("dt", {}, key), h("dd", {}, metadataValue(key, value))]),
  );
}

function metadataValue(key, value) {
  if (key === "links" && Array.isArray(value)) {
    return h("ul", {}, value.map((link) => h("li", {}, h("a", {href: link.href}, link.rel || link.href))));
  }
  if (typeof value === "string" && /^https?:\/\//.test(value)) return h("a", {href: value, rel: "noopener"}, value);
  if (value !== null && typeof value === "object") return h("pre", {class: "json"}, JSON.stringify(value, null, 2));
  return String(value);
}

// Workers' state per model from /readyz (ready or the problem) and /metrics (live, target,
// starting workers, queue depth, restarts); {} parts when a route is off or refuses.
async function workersState(signal) {
  const [ready, metrics] = await Promise.all([
    request("readyz", {signal}).then((r) => r.json(), (e) => (e.body ? e.body : null)),
    request("metrics", {signal}).then((r) => r.text(), () => ""),
  ]);
  return {ready, metrics: parseMetrics(metrics)};
}

// The Prometheus text exposition format (prometheus.io/docs/instrumenting/exposition_formats):
// {metric: {model: value}} for the per-model gauges this page shows.
function parseMetrics(text) {
  const wanted = /^deepaas_like_(workers|workers_target|workers_starting|queue_depth|worker_restarts(?:_total)?)\{model="([^"]*)"[^}]*\}\s+(\S+)/;
  const result = {};
  for (const line of text.split("\n")) {
    const match = line.match(wanted);
    if (!match) continue;
    const [, metric, model, value] = match;
    result[metric] = result[metric] || {};
    result[metric][model] = Number(value);
  }
  return result;
}

function stateLine(state, name) {
  const problems = (state.ready && state.ready.models && !Array.isArray(state.ready.models) && state.ready.models) || {};
  const problem = problems[name];
  const get = (metric) => (state.metrics[metric] || {})[name];
  const parts = [];
  if (get("workers") !== undefined) parts.push(`${get("workers")} of ${get("workers_target") ?? "?"} workers live`);
  if (get("workers_starting")) parts.push(`${get("workers_starting")} starting`);
  if (get("queue_depth") !== undefined) parts.push(`${get("queue_depth")} waiting`);
  const restarts = get("worker_restarts_total") ?? get("worker_restarts");
  if (restarts) parts.push(`${restarts} restarts`);
  return h(
    "p",
    {class: "state"},
    h("span", {class: problem ? "badge badge-error" : "badge badge-ok"}, problem ? "unavailable" : "ready"),
    " ",
    problem ? String(problem) : parts.join(", "),
  );
}

show();
