// The versions view (issue 29 item 4), "#/models/{name}/versions": the model versions its
// trainings made (newest first) with their metrics, state and training; promote one (the
// model's name serves it), roll back the latest promotion, delete one, predict with one.
import {ApiError, json, openapi} from "./api.js";
import {metricText} from "./charts.js";
import {h, notice, replace} from "./dom.js";
import {baseName, modelHash, modelHeader} from "./model_nav.js";
import {jsonTree, trainingHash, when} from "./trainings.js";

export const routes = [[/^#\/models\/([^/]+)\/versions\/?$/, versionsView]];

function versionsPath(model, suffix = "") {
  return `v2/models/${encodeURIComponent(model)}/versions/${suffix}`;
}

async function versionsView(main, [name], signal) {
  const document = await openapi();
  const model = baseName(name);
  const said = h("div", {class: "said", role: "status"});
  const list = h("div", {class: "versions-list"}, h("p", {class: "loading"}, "Loading…"));
  replace(main, modelHeader(document, model, "versions"), said, list);
  const redraw = async () => drawVersions(list, model, await json(versionsPath(model), {signal}), act);
  // Runs one change (promote, roll back, delete), says how it went, and redraws the list.
  const act = async (button, what, call) => {
    button.disabled = true;
    try {
      await call();
      replace(said, notice("ok", what));
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      replace(said, notice("error", error.message));
    } finally {
      button.disabled = false;
    }
    await redraw();
  };
  try {
    await redraw();
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 501) throw error;
    replace(list, notice("info", `${model} keeps no versions: its plugin has no save and load hooks.`));
  }
}

function drawVersions(target, model, listing, act) {
  const promoted = listing.promoted_version;
  const rollback = h("button", {type: "button", class: "secondary"}, "Roll back");
  rollback.addEventListener("click", () =>
    act(rollback, "Rolled back the latest promotion.", () => json(`v2/models/${encodeURIComponent(model)}/rollback`, {method: "POST"})),
  );
  replace(
    target,
    h(
      "p",
      {class: "serving"},
      h("span", {}, `${model} serves `, promoted ? h("strong", {}, promoted) : "the plugin as installed (no promoted version)", "."),
      promoted ? rollback : null,
    ),
    listing.versions.length
      ? h("div", {class: "cards versions"}, listing.versions.map((version) => versionCard(model, version, act)))
      : notice("info", "No version yet: each finished training makes one. ", h("a", {href: modelHash(model, "trainings")}, "Start a training")),
  );
}

function versionCard(model, version, act) {
  const number = version.version;
  const promote = h("button", {type: "button"}, "Promote");
  promote.addEventListener("click", () =>
    act(promote, `${version.id} is promoted: ${model} serves it.`, () => json(versionsPath(model, `${number}/promote`), {method: "POST"})),
  );
  const remove = h("button", {type: "button", class: "danger"}, "Delete");
  remove.addEventListener("click", () => {
    if (!window.confirm(`Delete version ${version.id}? Its files are removed and its number is not used again.`)) return;
    act(remove, `${version.id} is deleted.`, () => json(versionsPath(model, String(number)), {method: "DELETE"}));
  });
  return h(
    "article",
    {class: "card version", dataset: {version: String(number)}, "aria-labelledby": `version-${number}`},
    h(
      "h2",
      {id: `version-${number}`},
      version.id,
      " ",
      version.promoted ? h("span", {class: "badge badge-ok"}, "promoted") : null,
      " ",
      h("span", {class: version.state === "unavailable" ? "badge badge-error" : "badge badge-info"}, version.state),
    ),
    version.message ? notice("error", version.message) : null,
    h("dl", {class: "metadata"}, versionFacts(model, version)),
    h(
      "p",
      {class: "actions"},
      h("a", {class: "button secondary", href: modelHash(version.id, "predict")}, "Predict with this version"),
      version.promoted ? null : promote,
      version.promoted ? null : remove,
    ),
  );
}

function versionFacts(model, version) {
  const metrics = Object.entries(version.metrics || {});
  const facts = [
    ["Created", when(version.created)],
    ["Metrics", metrics.length ? h("ul", {class: "plain"}, metrics.map(([key, value]) => h("li", {}, `${key}: ${metricText(value)}`))) : "none reported"],
    ["Training", version.training ? h("a", {href: trainingHash(model, version.training)}, version.training.slice(0, 8)) : null],
    ["Arguments", version.arguments ? jsonTree(version.arguments) : null],
    ["MLflow run", version.mlflow_run_id],
  ];
  return facts.filter(([, value]) => value !== null && value !== undefined).map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]);
}
