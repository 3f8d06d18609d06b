// The trainings views (issue 29 item 3). "#/models/{name}/trainings": start a training from
// a form generated from the train operation's schema, list past trainings (filter by status,
// newest first) and compare the metrics of several. "#/models/{name}/trainings/{uuid}": one
// training live from its events stream: status, progress, messages, a chart per metric,
// cancel, result.
import {ApiError, events, json, openapi, operation} from "./api.js";
import {compareChart, metricChart, metricText} from "./charts.js";
import {h, notice, replace, seconds} from "./dom.js";
import {baseName, modelHash, modelHeader, modelPath} from "./model_nav.js";
import {buildForm} from "./schema_form.js";

const UUID = "([0-9a-f]{32})";
export const routes = [
  [/^#\/models\/([^/]+)\/trainings\/?$/, trainingsView],
  [new RegExp(`^#\\/models\\/([^/]+)\\/trainings\\/${UUID}$`), trainingView],
];
const STATUSES = ["pending", "running", "done", "error", "cancelled"];
const LISTED = 200; // the newest trainings listed; older ones stay reachable by the API
const LOGGED = 500; // events kept in a live view's log (a long training reports thousands)

/** The API path of a model's trainings, or of one ("v2/models/demo/train/<uuid>"). */
function trainPath(name, uuid = "") {
  return `v2/models/${encodeURIComponent(name)}/train/${uuid}`;
}

/** The hash of one training's live view. */
export function trainingHash(name, uuid) {
  return `${modelHash(name, "trainings")}/${uuid}`;
}

/** A date as the server prints it ("2026-01-31 12:00:00.123456") to the second. */
export function when(date) {
  return date ? String(date).slice(0, 19) : "";
}

/** A training's status as a badge. */
export function statusBadge(status) {
  const kind = {done: "ok", error: "error", cancelled: "error", running: "info", pending: "info"}[status] || "info";
  return h("span", {class: `badge badge-${kind}`}, status);
}

/** A JSON value as a small readable tree: objects and arrays as nested lists (long ones
 * folded), strings and numbers as text. Never innerHTML: plugin data is only text here. */
export function jsonTree(value, depth = 0) {
  if (value === null || typeof value !== "object") {
    const kind = value === null ? "null" : typeof value;
    return h("span", {class: `json-${kind}`}, typeof value === "string" ? JSON.stringify(value) : String(value));
  }
  const entries = Array.isArray(value) ? value.map((item, index) => [index, item]) : Object.entries(value);
  if (!entries.length) return h("span", {class: "json-empty"}, Array.isArray(value) ? "[]" : "{}");
  const list = h(
    "ul",
    {class: "json-tree"},
    entries.map(([key, item]) => h("li", {}, h("span", {class: "json-key"}, `${key}: `), jsonTree(item, depth + 1))),
  );
  if (depth === 0 || entries.length <= 8) return list;
  return h("details", {}, h("summary", {}, Array.isArray(value) ? `${entries.length} items` : `${entries.length} keys`), list);
}

// The metric points of a training: {metric: [[step, value], ...]} in step order. Its
// metric_history holds every step (bounded per metric, the server thins old ones); its
// events only the latest 50 reports, and those after the history's last step are added
// (an older server sends no history: the events alone).
export function metricPoints(job) {
  const points = {};
  const lastKept = {}; // metric -> the history's last step
  for (const [metric, history] of Object.entries(job.metric_history || {})) {
    if (history.length) lastKept[metric] = history[history.length - 1][0];
    points[metric] = history.filter(([step, value]) => step !== null && value !== null);
  }
  for (const event of job.events || []) {
    if (!event.metrics || event.step === undefined || event.step === null) continue;
    for (const [metric, value] of Object.entries(event.metrics)) {
      if (value === null || event.step <= lastKept[metric]) continue;
      (points[metric] = points[metric] || []).push([event.step, value]);
    }
  }
  return points;
}

// --------------------------------------------------------------------- the list and form

async function trainingsView(main, [name], signal) {
  const document = await openapi();
  const model = baseName(name);
  const train = operation(document, modelPath(model, "train/"), "post");
  if (!train) {
    replace(main, modelHeader(document, model, "trainings"), notice("info", `${model} cannot be trained here (no train route).`));
    return;
  }
  const list = h("div", {class: "trainings-list"});
  replace(
    main,
    modelHeader(document, model, "trainings"),
    startSection(document, model, train),
    h("section", {"aria-labelledby": "past-trainings"}, h("h2", {id: "past-trainings"}, "Trainings"), list),
  );
  await drawList(list, model, signal);
}

function startSection(document, model, train) {
  const content = train.requestBody && train.requestBody.content;
  const body = content && (content["multipart/form-data"] || content["application/x-www-form-urlencoded"] || content["application/json"]);
  const form = buildForm(document, (body && body.schema) || {type: "object"}, {prefix: "train"});
  const message = h("div", {class: "form-message", role: "status"});
  const button = h("button", {type: "submit"}, "Start training");
  const element = h(
    "form",
    {class: "train-form", novalidate: true, "aria-labelledby": "start-training"},
    h("h2", {id: "start-training"}, "Start a training"),
    form.fields.size ? form.element : h("p", {class: "muted"}, "This training takes no arguments."),
    h("p", {class: "actions"}, button),
    message,
  );
  element.addEventListener("submit", (event) => {
    event.preventDefault();
    startTraining(model, form, button, message);
  });
  return element;
}

async function startTraining(model, form, button, message) {
  form.clearErrors();
  replace(message, h("span", {class: "muted"}, "Starting…"));
  button.disabled = true;
  try {
    const training = await json(trainPath(model), {method: "POST", body: form.formData()});
    location.hash = trainingHash(model, training.uuid);
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    const unplaced = error.fields ? form.showErrors(error.fields) : [error.message];
    replace(message, error.fields && !unplaced.length ? notice("error", "The server refused some arguments: see the fields above.") : notice("error", unplaced.join(" ")));
  } finally {
    button.disabled = false;
  }
}

async function drawList(target, model, signal) {
  const filter = h(
    "select",
    {id: "training-status"},
    h("option", {value: ""}, "any status"),
    STATUSES.map((value) => h("option", {value}, value)),
  );
  const body = h("div", {class: "trainings-table"});
  const compare = h("div", {class: "compare", "aria-live": "polite"});
  const reload = () => fillList(body, compare, model, filter.value, signal);
  filter.addEventListener("change", reload);
  replace(
    target,
    h(
      "div",
      {class: "list-tools"},
      h("label", {for: "training-status"}, "Status"),
      filter,
      h("button", {type: "button", class: "secondary", onclick: reload}, "Refresh"),
    ),
    body,
    compare,
  );
  await reload();
}

async function fillList(body, compare, model, status, signal) {
  const query = new URLSearchParams({order: "desc", limit: String(LISTED)});
  if (status) query.set("status", status);
  replace(body, h("p", {class: "loading"}, "Loading…"));
  const trainings = await json(`${trainPath(model)}?${query}`, {signal});
  if (!trainings.length) {
    replace(body, notice("info", status ? `No ${status} training.` : "No training yet: start one above."));
    replace(compare);
    return;
  }
  const chosen = new Set();
  const button = h("button", {type: "button", class: "secondary", disabled: true}, "Compare selected");
  const onPick = (uuid, checked) => {
    if (checked) chosen.add(uuid);
    else chosen.delete(uuid);
    button.disabled = chosen.size < 1;
    button.textContent = chosen.size ? `Compare ${chosen.size} selected` : "Compare selected";
  };
  button.addEventListener("click", () => drawCompare(compare, trainings.filter((job) => chosen.has(job.uuid))));
  replace(
    body,
    h("div", {class: "table-wrap"}, trainingsTable(model, trainings, onPick)),
    h("p", {class: "actions"}, button, trainings.length >= LISTED ? h("span", {class: "muted"}, ` the ${LISTED} newest`) : null),
  );
}

function trainingsTable(model, trainings, onPick) {
  const rows = trainings.map((job) => {
    const id = `pick-${job.uuid}`;
    const cell = (label, ...children) => h("td", {dataset: {label}}, ...children);
    return h(
      "tr",
      {dataset: {uuid: job.uuid, status: job.status}},
      cell("Compare", h("input", {type: "checkbox", id, onchange: (event) => onPick(job.uuid, event.target.checked)}), h("label", {for: id, class: "visually-hidden"}, `Select training ${job.uuid.slice(0, 8)} to compare`)),
      cell("Training", h("a", {href: trainingHash(model, job.uuid)}, job.uuid.slice(0, 8)), h("div", {class: "muted small"}, when(job.date))),
      cell("Status", statusBadge(job.status), job.status === "running" && job.progress !== undefined ? ` ${Math.round(job.progress * 100)} %` : null),
      cell("Arguments", argumentsText(job.args)),
      cell("Metrics", metricsText(job.metrics)),
      cell("Version", job.result && job.result.version ? h("a", {href: modelHash(model, "versions")}, job.result.version) : ""),
    );
  });
  return h(
    "table",
    {class: "trainings"},
    h("thead", {}, h("tr", {}, ["Compare", "Training", "Status", "Arguments", "Metrics", "Version"].map((title) => h("th", {scope: "col"}, title)))),
    h("tbody", {}, rows),
  );
}

function argumentsText(args) {
  return Object.entries(args || {})
    .map(([key, value]) => `${key}=${argumentText(value)}`)
    .join(", ");
}

// An argument's value in a line: an upload by its file name.
function argumentText(value) {
  if (typeof value !== "object" || value === null) return String(value);
  return value.original_filename || value.filename || JSON.stringify(value);
}

function metricsText(metrics) {
  return Object.entries(metrics || {})
    .map(([key, value]) => `${key} ${metricText(value)}`)
    .join(", ");
}

// A training's line in a comparison: its short uuid and the arguments that differ between
// the trainings compared (else its date).
function seriesLabel(job, trainings) {
  const text = (value) => JSON.stringify(value);
  const keys = Object.keys(job.args || {}).filter((key) => trainings.some((other) => text((other.args || {})[key]) !== text(job.args[key])));
  const differ = keys.map((key) => `${key}=${argumentText(job.args[key])}`);
  return `${job.uuid.slice(0, 8)} (${differ.length ? differ.join(", ") : when(job.date)})`;
}

const compared = new WeakMap(); // a compare box -> its charts (destroyed when redrawn)

// One chart per metric any of the chosen trainings reported, one line per training.
function drawCompare(target, trainings) {
  for (const chart of compared.get(target) || []) chart.destroy();
  const byMetric = new Map();
  for (const job of trainings) {
    for (const [metric, points] of Object.entries(metricPoints(job))) {
      if (!byMetric.has(metric)) byMetric.set(metric, []);
      byMetric.get(metric).push({label: seriesLabel(job, trainings), points});
    }
  }
  const charts = [...byMetric].map(([metric, series]) =>
    compareChart(metric, series, `${metric} of ${series.length} training${series.length === 1 ? "" : "s"}, by step`),
  );
  compared.set(target, charts);
  replace(
    target,
    h("h3", {id: "compare-heading", tabindex: "-1"}, "Compared metrics"),
    charts.length ? h("div", {class: "charts"}, charts.map((chart) => chart.element)) : notice("info", "These trainings reported no metrics."),
  );
  target.querySelector("h3").focus();
}


// ------------------------------------------------------------------ one training, live

const ENDED = new Set(["done", "error", "cancelled"]);

async function trainingView(main, [name, uuid], signal) {
  const document = await openapi();
  const model = baseName(name);
  const first = await json(trainPath(model, uuid), {signal});
  const view = liveView(model, uuid);
  signal.addEventListener("abort", view.destroy);
  replace(
    main,
    modelHeader(document, model, "trainings"),
    h("p", {class: "back"}, h("a", {href: modelHash(model, "trainings")}, "← All trainings")),
    view.element,
  );
  view.apply(first);
  if (ENDED.has(first.status)) return;
  try {
    await events(`${trainPath(model, uuid)}/events`, (event, job) => event === "job" && view.apply(job), signal);
  } catch (error) {
    if (error.name === "AbortError" || !(error instanceof ApiError)) throw error;
    view.say(notice("error", `The training's events stopped: ${error.message}`));
  }
  if (!signal.aborted && !view.ended()) view.apply(await json(trainPath(model, uuid), {signal}));
}

// The parts of the live view, filled by apply(job) at each event.
function liveView(model, uuid) {
  const parts = {
    status: h("span", {class: "training-status"}),
    message: h("span", {class: "training-message"}),
    progress: h("progress", {id: "training-progress", max: "1", value: "0"}),
    percent: h("span", {class: "percent"}),
    facts: h("dl", {class: "metadata training-facts"}),
    cancel: h("button", {type: "button", class: "danger"}, "Cancel training"),
    said: h("div", {class: "said", role: "status"}),
    charts: h("div", {class: "charts"}, h("p", {class: "muted no-metrics"}, "No metric reported yet.")),
    result: h("div", {class: "training-result"}),
    log: h("ol", {class: "event-log", role: "log", "aria-label": "Training events"}),
  };
  const state = {job: null, charts: new Map(), logged: new Set()};
  parts.cancel.addEventListener("click", () => cancelTraining(model, uuid, parts, apply));
  const element = h(
    "div",
    {class: "training", dataset: {uuid}},
    h("h2", {}, "Training ", h("code", {class: "uuid"}, uuid)),
    h("p", {class: "training-line", role: "status", "aria-live": "polite"}, parts.status, " ", parts.message),
    h("div", {class: "progress-row"}, h("label", {for: "training-progress"}, "Progress"), parts.progress, parts.percent),
    h("p", {class: "actions"}, parts.cancel),
    parts.said,
    parts.facts,
    h("section", {"aria-labelledby": "metrics-heading"}, h("h2", {id: "metrics-heading"}, "Metrics"), parts.charts),
    parts.result,
    h("section", {"aria-labelledby": "events-heading"}, h("h2", {id: "events-heading"}, "Events"), parts.log),
  );
  function apply(job) {
    state.job = job;
    drawState(parts, job);
    drawCharts(parts.charts, state.charts, job);
    drawLog(parts.log, state.logged, job);
    drawResult(parts.result, model, job);
  }
  return {
    element,
    apply,
    say: (...children) => replace(parts.said, ...children),
    ended: () => Boolean(state.job && ENDED.has(state.job.status)),
    destroy: () => state.charts.forEach((chart) => chart.destroy()),
  };
}

function drawState(parts, job) {
  replace(parts.status, statusBadge(job.status));
  const events = job.events || [];
  const latest = events.length ? events[events.length - 1].message : "";
  parts.message.textContent = job.message || latest || "";
  const progress = job.progress ?? (job.status === "done" ? 1 : 0);
  parts.progress.value = progress;
  parts.percent.textContent = `${Math.round(progress * 100)} %`;
  parts.cancel.hidden = ENDED.has(job.status);
  replace(
    parts.facts,
    fact("Started", when(job.date)),
    fact("Finished", when(job.finish_date)),
    fact("Duration", durationOf(job)),
    fact("Arguments", jsonTree(job.args || {})),
  );
}

function fact(term, value) {
  return value === null || value === undefined || value === "" ? null : [h("dt", {}, term), h("dd", {}, value)];
}

// Seconds from the result, else from the dates (server-local, "2026-01-31 12:00:00.123456").
function durationOf(job) {
  if (job.result && typeof job.result.duration_seconds === "number") return seconds(job.result.duration_seconds);
  const parse = (text) => Date.parse(String(text).replace(" ", "T").replace(/(\.\d{3})\d*/, "$1"));
  const start = parse(job.date);
  const end = job.finish_date ? parse(job.finish_date) : ENDED.has(job.status) ? NaN : Date.now();
  return Number.isNaN(start) || Number.isNaN(end) ? "" : `${seconds(Math.max(0, (end - start) / 1000))}${job.finish_date ? "" : " so far"}`;
}

// A chart per metric, made when the metric first appears; points are added as they come
// (each job event carries the latest events: steps already drawn are skipped).
function drawCharts(target, charts, job) {
  for (const [metric, points] of Object.entries(metricPoints(job))) {
    if (!charts.has(metric)) {
      if (!charts.size) replace(target);
      const chart = metricChart(metric, `${metric} by step`);
      charts.set(metric, chart);
      target.append(chart.element);
    }
    for (const [step, value] of points) charts.get(metric).add(step, value);
  }
}

// New events go at the end; the log follows them unless the person scrolled up to read.
function drawLog(log, logged, job) {
  const following = log.scrollHeight - log.scrollTop - log.clientHeight < 24;
  for (const event of job.events || []) {
    const key = `${event.time}|${event.message}`;
    if (logged.has(key)) continue;
    logged.add(key);
    log.append(h("li", {class: event.source === "server" ? "server" : null}, h("time", {}, String(event.time || "").slice(11, 19)), " ", event.message));
  }
  while (log.childElementCount > LOGGED) log.firstElementChild.remove();
  if (following) log.scrollTop = log.scrollHeight;
}

function drawResult(target, model, job) {
  if (job.status === "error") {
    replace(target, h("h2", {}, "Error"), notice("error", job.message || "the training failed"));
  } else if (job.status === "done" && job.result) {
    const version = job.result.version;
    replace(
      target,
      h("h2", {}, "Result"),
      version
        ? h(
            "p",
            {class: "actions made-version"},
            "This training made version ",
            h("a", {href: modelHash(model, "versions")}, version),
            " ",
            h("a", {class: "button secondary", href: modelHash(version, "predict")}, `Predict with ${version}`),
          )
        : null,
      h("div", {class: "json-box"}, jsonTree(job.result.output)),
    );
  } else {
    replace(target);
  }
}

async function cancelTraining(model, uuid, parts, apply) {
  if (!window.confirm(`Cancel training ${uuid.slice(0, 8)}? Its worker is stopped and its work is lost.`)) return;
  parts.cancel.disabled = true;
  try {
    apply(await json(trainPath(model, uuid), {method: "DELETE"}));
    replace(parts.said, notice("ok", "Training cancelled."));
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    replace(parts.said, notice("error", `Cannot cancel: ${error.message}`));
  } finally {
    parts.cancel.disabled = false;
  }
}
