// The heading and tabs of one model's pages: Overview, Predict, Trainings, Versions (each
// only when the server serves its routes, as the OpenAPI document lists them).
import {h} from "./dom.js";

/** The path of a model's route in the document ("/v2/models/demo/predict/"); name may be
 * "name@n" for a version, whose routes are documented under its base name. */
export function modelPath(name, suffix = "") {
  return `/v2/models/${baseName(name)}/${suffix}`;
}

/** "demo@3" -> "demo". */
export function baseName(name) {
  return String(name).split("@")[0];
}

/** The page hash of a model's view: modelHash("demo", "predict") -> "#/models/demo/predict". */
export function modelHash(name, view = "") {
  return `#/models/${encodeURIComponent(name)}${view ? `/${view}` : ""}`;
}

/** A model's heading with its tabs; active is "overview", "predict", "trainings" or "versions". */
export function modelHeader(document, name, active) {
  const tabs = [["overview", "Overview", ""]];
  if (document.paths[modelPath(name, "predict/")]) tabs.push(["predict", "Predict", "predict"]);
  if (document.paths[modelPath(name, "train/")]) tabs.push(["trainings", "Trainings", "trainings"]);
  if (document.paths[modelPath(name, "versions/")]) tabs.push(["versions", "Versions", "versions"]);
  return h(
    "div",
    {class: "model-header"},
    h("h1", {}, name),
    h(
      "nav",
      {class: "tabs", "aria-label": `${name} pages`},
      tabs.map(([key, label, view]) =>
        h("a", {href: modelHash(name, view), class: key === active ? "tab active" : "tab", "aria-current": key === active ? "page" : null}, label),
      ),
    ),
  );
}
