// The predict view (issue 29 item 2): owned by the predict helper; this placeholder lists
// the route so that the page runs.
import {openapi} from "./api.js";
import {replace} from "./dom.js";
import {baseName, modelHeader} from "./model_nav.js";

export const routes = [[/^#\/models\/([^/]+)\/predict$/, render]];

async function render(main, [name]) {
  replace(main, modelHeader(await openapi(), baseName(name), "predict"));
}
