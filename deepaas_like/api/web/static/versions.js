// The versions view (issue 29 item 4): owned by the trainings helper; this placeholder lists
// the route so that the page runs.
import {openapi} from "./api.js";
import {replace} from "./dom.js";
import {baseName, modelHeader} from "./model_nav.js";

export const routes = [[/^#\/models\/([^/]+)\/versions$/, render]];

async function render(main, [name]) {
  replace(main, modelHeader(await openapi(), baseName(name), "versions"));
}
