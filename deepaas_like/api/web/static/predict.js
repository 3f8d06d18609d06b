// The predict view (issue 29 items 2 and 7): "#/models/{name}/predict", name being a model
// or one of its versions ("demo@3"). The form is generated from the predict operation's
// request body in /openapi.json; the media type of the answer is chosen among those the
// model offers (its `accept` argument, else the 200 answer's content types), as deepaas_ui
// gives one view per media type; the answer is shown by answer_view.js. A prediction runs
// at once (the page waits) or as a job (Prefer: respond-async) followed on its events stream.
import {ApiError, events, json, openapi, operation, request, resolve} from "./api.js";
import {h, notice, replace, seconds} from "./dom.js";
import {baseName, modelHash, modelHeader, modelPath} from "./model_nav.js";
import {bytesText, buildForm} from "./schema_form.js";
import {answerFilename, answerView, blobURLs} from "./answer_view.js";

export const routes = [[/^#\/models\/([^/]+)\/predict$/, render]];

async function render(main, [name], signal) {
  const document = await openapi();
  const base = baseName(name);
  const post = operation(document, modelPath(base, "predict/"), "post");
  if (!post) {
    replace(main, modelHeader(document, base, "predict"), notice("info", `${base} has no predict route on this server.`));
    return;
  }
  const body = requestBodyOf(document, post);
  const argumentsSchema = resolve(document, body.schema);
  const view = {
    name,
    base,
    document,
    body,
    hasAccept: Boolean(argumentsSchema.properties && argumentsSchema.properties.accept),
    mediaTypes: answerMediaTypes(document, post, argumentsSchema),
    answerSchema: answerSchemaOf(document, post),
    form: buildForm(document, body.schema, {omit: ["accept"], prefix: "predict"}),
    canQueue: Boolean(document.paths[modelPath(base, "predict/{uuid}/events")]),
    urls: blobURLs(),
    running: null,
  };
  replace(main, modelHeader(document, base, "predict"), h("div", {class: "predict-layout"}, predictForm(view), answerSection(view)));
  signal.addEventListener("abort", () => {
    if (view.running) view.running.controller.abort();
    view.urls.revokeAll();
  });
  if (document.paths[modelPath(base, "versions/")]) showVersions(view, signal);
}

// The request body's media type and schema: a form (multipart/form-data) when the model
// takes one, which carries files; else JSON.
function requestBodyOf(document, post) {
  const content = (resolve(document, post.requestBody || {}).content) || {};
  for (const mediaType of ["multipart/form-data", "application/x-www-form-urlencoded", "application/json"]) {
    if (content[mediaType]) return {mediaType, schema: content[mediaType].schema || {}};
  }
  return {mediaType: "multipart/form-data", schema: {type: "object", properties: {}}};
}

// The media types the answer can come in: the `accept` argument's choices, else the 200
// answer's content types. {types: [...], chosen: the default}.
function answerMediaTypes(document, post, argumentsSchema) {
  const accept = argumentsSchema.properties && resolve(document, argumentsSchema.properties.accept || {});
  const answered = Object.keys(((post.responses || {})["200"] || {}).content || {});
  const types = accept && Array.isArray(accept.enum) && accept.enum.length ? accept.enum.map(String) : answered;
  const chosen = accept && types.includes(accept.default) ? accept.default : types[0] || "application/json";
  return {types: types.length ? types : [chosen], chosen};
}

function answerSchemaOf(document, post) {
  const answer = ((post.responses || {})["200"] || {}).content || {};
  return answer["application/json"] ? resolve(document, answer["application/json"].schema || {}) : null;
}

const MEDIA_TYPE_NAMES = {"application/json": "JSON", "application/zip": "ZIP", "image/*": "Image", "text/plain": "Text", "text/csv": "CSV"};

/** How a person calls a media type: "JSON", "PNG", "ZIP", "Image". */
export function mediaTypeName(mediaType) {
  if (MEDIA_TYPE_NAMES[mediaType]) return MEDIA_TYPE_NAMES[mediaType];
  const subtype = (mediaType.split("/")[1] || mediaType).replace(/^x-/, "").replace(/\+.*$/, "");
  return subtype === "*" ? mediaType : subtype.toUpperCase();
}

function predictForm(view) {
  view.versionSlot = h("div", {class: "version-slot"});
  view.submit = h("button", {type: "submit"}, "Predict");
  view.cancel = h("button", {type: "button", class: "danger", hidden: true, onclick: () => cancel(view)}, "Cancel");
  view.jobBox = view.canQueue ? h("input", {type: "checkbox", id: "predict-as-job"}) : null;
  const form = h(
    "form",
    {class: "predict-form", novalidate: true, "aria-label": `Predict with ${view.base}`},
    view.versionSlot,
    view.form.element,
    mediaTypeChoice(view),
    view.jobBox
      ? h("div", {class: "job-option"}, view.jobBox, h("label", {for: "predict-as-job"}, "Run as a job", h("span", {class: "field-hint"}, " — shows its progress and can be cancelled")))
      : null,
    h("div", {class: "actions"}, view.submit, view.cancel),
  );
  // The server checks the arguments (novalidate): its 422 messages are shown beside the fields.
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    predict(view);
  });
  return form;
}

// "Answer as JSON | PNG | ZIP": one radio per media type the model answers in.
function mediaTypeChoice(view) {
  const {types, chosen} = view.mediaTypes;
  view.mediaTypeError = h("p", {class: "field-error", "aria-live": "polite"});
  const radios = types.map((type, index) =>
    h(
      "label",
      {class: "segment", title: type},
      h("input", {type: "radio", name: "predict-media-type", value: type, checked: type === chosen, id: `predict-media-type-${index}`}),
      h("span", {}, mediaTypeName(type)),
    ),
  );
  return h(
    "fieldset",
    {class: "media-types", hidden: types.length < 2},
    h("legend", {}, "Answer as"),
    h("div", {class: "segments"}, radios),
    view.mediaTypeError,
  );
}

function chosenMediaType(view) {
  const checked = view.submit.form.querySelector("input[name=predict-media-type]:checked");
  return checked ? checked.value : view.mediaTypes.chosen;
}

function answerSection(view) {
  view.status = h("p", {class: "predict-status", role: "status", "aria-live": "polite"});
  view.progress = h("progress", {max: "1", class: "job-progress", hidden: true, "aria-label": "progress of the job"});
  view.output = h("div", {class: "answer-output"}, h("p", {class: "muted"}, "The answer shows here."));
  return h("section", {class: "predict-answer", "aria-labelledby": "answer-heading"}, h("h2", {id: "answer-heading"}, "Answer"), view.status, view.progress, view.output);
}

// --- versions -----------------------------------------------------------------------------

// A version selector when the model has versions: the served one (the model's own name) by
// default, or "name@n"; the page's address follows the choice.
async function showVersions(view, signal) {
  let listing;
  try {
    listing = await json(`v2/models/${segment(view.base)}/versions/`, {signal});
  } catch (error) {
    if (error.name !== "AbortError") view.versionSlot.append(notice("error", `versions: ${error.message}`));
    return;
  }
  const versions = (listing.versions || []).filter((version) => version.state !== "deleted");
  if (!versions.length) return;
  const promoted = listing.promoted_version ? ` (now ${listing.promoted_version})` : "";
  const select = h(
    "select",
    {id: "predict-version"},
    h("option", {value: view.base}, `served version${promoted}`),
    versions.map((version) => h("option", {value: version.id, selected: version.id === view.name}, versionLabel(version))),
  );
  select.addEventListener("change", () => {
    view.name = select.value;
    history.replaceState(null, "", modelHash(view.name, "predict"));
  });
  view.versionSlot.append(h("div", {class: "field"}, h("label", {for: "predict-version"}, "Version"), select));
}

function versionLabel(version) {
  const metrics = Object.entries(version.metrics || {})
    .slice(0, 2)
    .map(([metric, value]) => `${metric} ${Number(value.toPrecision(3))}`);
  const facts = [version.promoted ? "promoted" : null, version.state !== "loaded" ? version.state : null, ...metrics].filter(Boolean);
  return `${version.id}${facts.length ? ` — ${facts.join(", ")}` : ""}`;
}

// --- predicting ---------------------------------------------------------------------------

function segment(name) {
  return encodeURIComponent(name).replace(/%40/g, "@");
}

function predictPath(view) {
  return `v2/models/${segment(view.name)}/predict/`;
}

// The request's body and Content-Type: the form (with `accept` when the model takes it), or
// its JSON for a model that takes JSON only.
function requestBody(view, mediaType) {
  if (view.body.mediaType === "application/json") {
    const values = view.form.jsonBody();
    if (view.hasAccept) values.accept = mediaType;
    return {body: JSON.stringify(values), headers: {"Content-Type": "application/json"}};
  }
  const data = view.form.formData();
  if (view.hasAccept) data.set("accept", mediaType);
  if (view.body.mediaType === "application/x-www-form-urlencoded") return {body: new URLSearchParams(data), headers: {}};
  return {body: data, headers: {}};
}

async function predict(view) {
  if (view.running) return;
  const mediaType = chosenMediaType(view);
  const asJob = Boolean(view.jobBox && view.jobBox.checked);
  const running = {controller: new AbortController(), started: performance.now(), job: null, note: "predicting"};
  view.running = running;
  view.form.clearErrors();
  view.mediaTypeError.textContent = "";
  view.urls.revokeAll();
  replace(view.output);
  setBusy(view, true);
  const timer = setInterval(() => showElapsed(view, running), 200);
  showElapsed(view, running);
  try {
    if (asJob) await predictAsJob(view, mediaType, running);
    else await predictNow(view, mediaType, running);
  } catch (error) {
    showFailure(view, error, running);
  } finally {
    clearInterval(timer);
    view.running = null;
    setBusy(view, false);
  }
}

function setBusy(view, busy) {
  view.submit.disabled = busy;
  view.submit.textContent = busy ? "Predicting…" : "Predict";
  view.cancel.hidden = !busy;
  view.progress.hidden = !busy || !(view.running && view.running.job);
}

function elapsed(running) {
  return (performance.now() - running.started) / 1000;
}

function showElapsed(view, running) {
  view.status.textContent = `${running.note[0].toUpperCase()}${running.note.slice(1)} · ${seconds(elapsed(running))}`;
}

async function predictNow(view, mediaType, running) {
  const {body, headers} = requestBody(view, mediaType);
  const response = await request(predictPath(view), {method: "POST", body, headers: {...headers, Accept: mediaType}, signal: running.controller.signal});
  await showResponse(view, response, running);
}

async function showResponse(view, response, running) {
  const blob = await response.blob();
  const mediaType = response.headers.get("Content-Type") || blob.type || "application/octet-stream";
  const filename = answerFilename(mediaType, response.headers.get("Content-Disposition"));
  const element = await answerView({blob, mediaType, filename}, {urls: view.urls, schema: view.answerSchema});
  replace(view.output, element);
  view.status.textContent = `Answered in ${seconds(elapsed(running))} · ${mediaType.split(";")[0]} · ${bytesText(blob.size)}`;
}

// --- as a job -----------------------------------------------------------------------------

async function predictAsJob(view, mediaType, running) {
  const {body, headers} = requestBody(view, mediaType);
  const {signal} = running.controller;
  const response = await request(predictPath(view), {method: "POST", body, headers: {...headers, Accept: "application/json", Prefer: "respond-async"}, signal});
  if (response.status !== 202) return showResponse(view, response, running); // answered at once
  running.job = await response.json();
  running.path = `${predictPath(view)}${running.job.uuid}`;
  setBusy(view, true);
  showJob(view, running);
  await events(`${running.path}/events`, (event, data) => {
    if (event === "job" && data && typeof data === "object") {
      running.job = data;
      showJob(view, running);
    }
  }, signal);
  // The stream ends when the job does; the job as stored then is the last word.
  running.job = await json(running.path, {signal});
  showJob(view, running);
  return showJobEnd(view, running, mediaType);
}

function showJob(view, running) {
  const {job} = running;
  const progress = typeof job.progress === "number" ? job.progress : null;
  if (progress === null) view.progress.removeAttribute("value");
  else view.progress.value = progress;
  const percent = progress === null ? "" : ` ${Math.round(progress * 100)} %`;
  // The plugin's latest report (deepaas_like.progress.report) is the job's last event.
  const reports = (job.events || []).filter((event) => event.message);
  const message = job.message || (reports.length ? reports[reports.length - 1].message : "");
  running.note = `job ${job.uuid.slice(0, 8)} ${job.status}${percent}${message ? `: ${message}` : ""}`;
  showElapsed(view, running);
}

async function showJobEnd(view, running, mediaType) {
  const {job} = running;
  if (job.status === "cancelled") {
    replace(view.output, notice("info", `The job was cancelled after ${seconds(elapsed(running))}.`));
    view.status.textContent = "Cancelled";
    return;
  }
  if (job.status !== "done") {
    replace(view.output, notice("error", `The job ended ${job.status}: ${job.message || "no message"}`));
    view.status.textContent = `Job ${job.status} after ${seconds(elapsed(running))}`;
    return;
  }
  const stored = job.result || {};
  const storedType = stored.media_type || "application/json";
  if (/json/.test(storedType.split(";")[0])) {
    const blob = new Blob([JSON.stringify(stored.output ?? null)], {type: "application/json"});
    replace(view.output, await answerView({blob, mediaType: "application/json", filename: "prediction.json"}, {urls: view.urls, schema: view.answerSchema}));
    view.status.textContent = `Job done in ${seconds(elapsed(running))} · application/json · ${bytesText(blob.size)}`;
    return;
  }
  // A binary result is kept by the server: fetched in its media type, as the client's result() does.
  const response = await request(running.path, {headers: {Accept: storedType || mediaType}, signal: running.controller.signal});
  await showResponse(view, response, running);
  view.status.textContent = `Job done: ${view.status.textContent}`;
}

async function cancel(view) {
  const {running} = view;
  if (!running) return;
  if (!running.job) {
    running.controller.abort();
    return;
  }
  view.cancel.disabled = true;
  try {
    await request(running.path, {method: "DELETE", headers: {Accept: "application/json"}});
  } catch (error) {
    view.output.append(notice("error", `Cancel: ${error.message}`));
  } finally {
    view.cancel.disabled = false;
  }
}

function showFailure(view, error, running) {
  if (error.name === "AbortError") {
    view.status.textContent = `Stopped waiting after ${seconds(elapsed(running))}`;
    replace(view.output, notice("info", "You stopped waiting for this prediction; the server may still finish it."));
    return;
  }
  view.status.textContent = `Failed after ${seconds(elapsed(running))}`;
  if (error instanceof ApiError && error.status === 422 && error.fields) {
    const {accept, ...fields} = error.fields;
    if (accept) view.mediaTypeError.textContent = [accept].flat().join(" ");
    const unplaced = view.form.showErrors(fields);
    replace(
      view.output,
      notice("error", "The server refused some arguments: see the messages beside them.", unplaced.length ? h("ul", {}, unplaced.map((line) => h("li", {}, line))) : null),
    );
    return;
  }
  const status = error instanceof ApiError && error.status ? `${error.status}: ` : "";
  replace(view.output, notice("error", `${status}${error.message || String(error)}`));
  if (!(error instanceof ApiError)) console.warn(error);
}
