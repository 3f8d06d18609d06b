// A prediction's answer shown as what it is (issue 29 items 2 and 7): an image inline, audio
// and video in players, JSON as a tree with its classification charts and the media it
// carries in base64, a ZIP as its files, text as text, any other bytes as a download. Each
// media type's view follows deepaas_ui's conventions (ai4os/deepaas_ui, ui_utils.py).
import {unzipSync} from "./vendor/fflate/fflate.esm.js";
import {h} from "./dom.js";
import {bytesText, fileKind, mediaKind} from "./schema_form.js";

/** The blob: URLs of the answer on show; revokeAll() frees them when the next one comes. */
export function blobURLs() {
  const made = [];
  return {
    make(blob) {
      const address = URL.createObjectURL(blob);
      made.push(address);
      return address;
    },
    revokeAll() {
      for (const address of made.splice(0)) URL.revokeObjectURL(address);
    },
  };
}

/**
 * The element showing an answer: answer = {blob, mediaType, filename}; context =
 * {urls: blobURLs(), schema: the JSON answer's schema (resolved) or null}.
 */
export async function answerView(answer, context) {
  const type = answer.mediaType.split(";")[0].trim().toLowerCase();
  const kind = mediaKind(type);
  if (isJSON(type)) return jsonAnswer(JSON.parse(await answer.blob.text()), context);
  if (kind) return mediaView(kind, answer.blob, answer.filename, context.urls);
  if (type === "application/zip" || type === "application/x-zip-compressed") return zipView(answer, context.urls);
  if (type.startsWith("text/")) return h("div", {class: "answer-text"}, h("pre", {tabindex: "0"}, await answer.blob.text()), download(answer.blob, answer.filename, context.urls));
  return h("div", {class: "answer-bytes"}, h("p", {}, `${type} · ${bytesText(answer.blob.size)}`), download(answer.blob, answer.filename, context.urls));
}

function isJSON(type) {
  return type === "application/json" || type.endsWith("+json");
}

/** A file name for an answer of mediaType: the Content-Disposition's, else prediction.<ext>. */
export function answerFilename(mediaType, disposition) {
  const match = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(disposition || "");
  if (match) return decodeURIComponent(match[1]).replace(/[\\/]/g, "_");
  const subtype = (mediaType.split(";")[0].split("/")[1] || "bin").replace(/^x-/, "").replace(/\+.*$/, "");
  const extension = {jpeg: "jpg", "svg+xml": "svg", plain: "txt", mpeg: "mp3", "x-zip-compressed": "zip", "*": "bin"}[subtype] || subtype;
  return `prediction.${extension}`;
}

function download(blob, filename, urls) {
  return h("a", {class: "button secondary download", href: urls.make(blob), download: filename}, `Download ${filename} (${bytesText(blob.size)})`);
}

// An image, audio or video answer (or one found in JSON): shown, with its facts and download.
function mediaView(kind, blob, filename, urls, caption = null) {
  const address = urls.make(blob);
  const label = caption || filename;
  let media;
  if (kind === "image") {
    media = h("img", {src: address, alt: label, class: "answer-image"});
  } else {
    media = h(kind, {src: address, controls: true, preload: "metadata", "aria-label": label});
  }
  const facts = h("span", {class: "media-facts"}, `${blob.type || kind} · ${bytesText(blob.size)}`);
  if (kind === "image") media.addEventListener("load", () => showSize(media, facts));
  return h(
    "figure",
    {class: `answer-media answer-${kind}`},
    h("figcaption", {}, caption ? h("strong", {}, caption) : null, facts),
    media,
    download(blob, filename, urls),
  );
}

// Images whose longer side is shorter than this are drawn at a whole multiple of their
// size, pixels kept sharp (a generated 64x64 image is otherwise a stamp).
const SMALLEST_SHOWN = 160;

function showSize(image, facts) {
  const {naturalWidth: width, naturalHeight: height} = image;
  facts.append(` · ${width}×${height} px`);
  const side = Math.max(width, height);
  if (!width || side >= SMALLEST_SHOWN) return;
  const scale = Math.ceil(SMALLEST_SHOWN / side);
  image.style.width = `${width * scale}px`;
  image.classList.add("enlarged");
  facts.append(` (shown ×${scale})`);
}

// --- ZIP ----------------------------------------------------------------------------------

// Images inside a ZIP are shown up to this many bytes in all (the rest listed only).
const ZIP_PREVIEW_BYTES = 20e6;

async function zipView(answer, urls) {
  let files;
  try {
    files = unzipSync(new Uint8Array(await answer.blob.arrayBuffer()));
  } catch (error) {
    return h("div", {class: "answer-zip"}, h("p", {}, `A ZIP that cannot be read here (${error.message}).`), download(answer.blob, answer.filename, urls));
  }
  const names = Object.keys(files).filter((name) => !name.endsWith("/"));
  let budget = ZIP_PREVIEW_BYTES;
  const rows = names.map((name) => {
    const data = files[name];
    const type = typeOfName(name);
    let shown = null;
    if (mediaKind(type) === "image" && data.length <= budget) {
      budget -= data.length;
      shown = h("img", {src: urls.make(new Blob([data], {type})), alt: name, class: "zip-thumbnail"});
    } else if ((type.startsWith("text/") || isJSON(type)) && data.length <= 65536) {
      shown = h("details", {}, h("summary", {}, "Show"), h("pre", {tabindex: "0"}, new TextDecoder().decode(data)));
    }
    return h("tr", {}, h("td", {class: "zip-name"}, name), h("td", {class: "zip-size"}, bytesText(data.length)), h("td", {}, shown));
  });
  return h(
    "div",
    {class: "answer-zip"},
    h("p", {}, `A ZIP of ${names.length} file${names.length === 1 ? "" : "s"} `, download(answer.blob, answer.filename, urls)),
    h("div", {class: "table-wrap"}, h("table", {}, h("caption", {}, "Files in the ZIP"), h("thead", {}, h("tr", {}, h("th", {scope: "col"}, "File"), h("th", {scope: "col"}, "Size"), h("th", {scope: "col"}, "Content"))), h("tbody", {}, rows))),
  );
}

const TYPES_BY_EXTENSION = {
  png: "image/png", jpg: "image/jpeg", jpeg: "image/jpeg", gif: "image/gif", webp: "image/webp", bmp: "image/bmp",
  svg: "image/svg+xml", wav: "audio/wav", mp3: "audio/mpeg", ogg: "audio/ogg", flac: "audio/flac",
  mp4: "video/mp4", webm: "video/webm", json: "application/json", txt: "text/plain", csv: "text/csv", md: "text/markdown",
};

function typeOfName(name) {
  const extension = name.split(".").pop().toLowerCase();
  return TYPES_BY_EXTENSION[extension] || "application/octet-stream";
}

// --- JSON ---------------------------------------------------------------------------------

// A JSON answer: its classification charts and media first (as deepaas_ui draws them), then
// the whole answer as a tree, and the raw JSON to copy.
function jsonAnswer(value, context) {
  const media = findMedia(value, context.schema, "");
  const shownMedia = new Map(media.map((found) => [found.path, found]));
  return h(
    "div",
    {class: "answer-json"},
    findClassifications(value, "", 0).map(classificationChart),
    media.map((found) => mediaView(found.kind, found.blob, `${found.path.replace(/[^\w.-]+/g, "_") || "media"}.${found.blob.type.split("/")[1]}`, context.urls, found.path)),
    findRecords(value, "", 0).map(recordsTable),
    h("details", {class: "json-tree", open: true}, h("summary", {}, "Answer as JSON"), treeNode(value, "", shownMedia, 0)),
    rawJSON(value),
  );
}

// A list of records (objects of the same plain fields: a caption per frame, a box per
// detection) reads best as a table: [{path, rows, columns}], at most two levels down.
function findRecords(value, path, depth, found = []) {
  if (depth > 2 || value === null || typeof value !== "object") return found;
  if (isRecords(value)) {
    const columns = [...new Set(value.flatMap((row) => Object.keys(row)))];
    found.push({path: path || "answer", rows: value, columns});
    return found;
  }
  const entries = Array.isArray(value) ? [] : Object.entries(value);
  for (const [key, item] of entries) findRecords(item, childPath(path, key, false), depth + 1, found);
  return found;
}

function isRecords(value) {
  if (!Array.isArray(value) || value.length < 2 || value.length > 1000) return false;
  const plain = (row) => row && typeof row === "object" && !Array.isArray(row) && Object.values(row).every((cell) => cell === null || typeof cell !== "object" || isShortList(cell));
  if (!value.every(plain)) return false;
  const keys = Object.keys(value[0]);
  return keys.length >= 2 && keys.length <= 12 && value.every((row) => keys.every((key) => key in row));
}

function recordsTable({path, rows, columns}) {
  const cell = (value) => (value === null || value === undefined ? "" : typeof value === "object" ? JSON.stringify(value) : String(value));
  return h(
    "div",
    {class: "table-wrap answer-records"},
    h(
      "table",
      {},
      h("caption", {}, `${path} (${rows.length})`),
      h("thead", {}, h("tr", {}, columns.map((column) => h("th", {scope: "col"}, column)))),
      h("tbody", {}, rows.slice(0, LIST_ITEMS).map((row) => h("tr", {}, columns.map((column) => h("td", {}, cell(row[column])))))),
    ),
    rows.length > LIST_ITEMS ? h("p", {class: "muted"}, `… ${rows.length - LIST_ITEMS} more rows in the JSON below`) : null,
  );
}

function rawJSON(value) {
  const text = JSON.stringify(value, null, 2);
  const pre = h("pre", {class: "json raw-json", tabindex: "0"}, text);
  const status = h("span", {class: "copy-status", role: "status"});
  const copy = h("button", {type: "button", class: "secondary"}, "Copy JSON");
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text);
      status.textContent = "copied";
    } catch {
      // No clipboard (an insecure origin, a refused permission): select it for Ctrl+C.
      getSelection().selectAllChildren(pre);
      status.textContent = "selected: press Ctrl+C to copy";
    }
  });
  return h("details", {class: "raw"}, h("summary", {}, "Raw JSON"), h("p", {}, copy, " ", status), pre);
}

// Trees open their first two levels; longer lists show their first items.
const OPEN_DEPTH = 2;
const LIST_ITEMS = 100;

function treeNode(value, path, shownMedia, depth) {
  if (value === null || typeof value !== "object") return leaf(value, path, shownMedia);
  if (isShortList(value)) return h("span", {class: "json-value"}, JSON.stringify(value).replace(/,/g, ", "));
  const entries = Array.isArray(value) ? value.map((item, index) => [index, item]) : Object.entries(value);
  const shown = entries.slice(0, LIST_ITEMS);
  const items = shown.map(([key, item]) => {
    const inner = childPath(path, key, Array.isArray(value));
    if (item !== null && typeof item === "object" && !isShortList(item)) {
      return h("li", {}, h("details", {open: depth + 1 < OPEN_DEPTH}, h("summary", {}, h("span", {class: "json-key"}, String(key)), " ", h("span", {class: "json-count"}, countText(item))), treeNode(item, inner, shownMedia, depth + 1)));
    }
    return h("li", {}, h("span", {class: "json-key"}, String(key)), ": ", treeNode(item, inner, shownMedia, depth + 1));
  });
  if (entries.length > shown.length) items.push(h("li", {class: "json-more"}, `… ${entries.length - shown.length} more (see the raw JSON)`));
  return h("ul", {class: "json-node"}, items);
}

// A list of a few numbers or words reads best on one line: [206.6, 64.8, 59.7].
function isShortList(value) {
  return Array.isArray(value) && value.length <= 8 && value.every((item) => item === null || (typeof item !== "object" && String(item).length <= 24)) && JSON.stringify(value).length <= 80;
}

function childPath(path, key, inList) {
  if (inList) return `${path}[${key}]`;
  return path ? `${path}.${key}` : String(key);
}

function countText(value) {
  const size = Array.isArray(value) ? value.length : Object.keys(value).length;
  return Array.isArray(value) ? `[${size} item${size === 1 ? "" : "s"}]` : `{${size} key${size === 1 ? "" : "s"}}`;
}

function leaf(value, path, shownMedia) {
  const found = shownMedia.get(path);
  if (found) return h("span", {class: "json-media"}, `${found.blob.type}, ${bytesText(found.blob.size)} in base64 (shown above)`);
  const type = value === null ? "null" : typeof value;
  const text = type === "string" ? JSON.stringify(value.length > 500 ? `${value.slice(0, 500)}…` : value) : String(value);
  return h("span", {class: `json-value json-${type}`}, text);
}

// --- media in JSON ------------------------------------------------------------------------

/**
 * The media a JSON answer carries as base64 strings (or data: URLs): a string whose
 * response-schema description says image, audio or video (deepaas_ui's convention), or
 * whose bytes start as an image, audio or video file does. [{path, kind, blob}].
 */
function findMedia(value, schema, path, found = [], depth = 0) {
  if (depth > 6 || found.length >= 24) return found;
  if (typeof value === "string") {
    const media = decodeMedia(value, schema ? fileKind(schema) : null);
    if (media) found.push({path, ...media});
  } else if (Array.isArray(value)) {
    value.slice(0, 64).forEach((item, index) => findMedia(item, schema && schema.items, `${path}[${index}]`, found, depth + 1));
  } else if (value && typeof value === "object") {
    for (const [key, item] of Object.entries(value)) {
      const inner = schema && schema.properties ? schema.properties[key] : null;
      findMedia(item, inner, childPath(path, key, false), found, depth + 1);
    }
  }
  return found;
}

// Strings shorter than this are words, not files.
const SHORTEST_MEDIA = 64;

function decodeMedia(text, declared) {
  if (text.length < SHORTEST_MEDIA) return null;
  const dataURL = /^data:([\w.+-]+\/[\w.+-]+);base64,/.exec(text);
  const base64 = (dataURL ? text.slice(dataURL[0].length) : text).replace(/[\r\n]+/g, "").replace(/-/g, "+").replace(/_/g, "/");
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(base64)) return null;
  // The first bytes say what it is; only media are decoded in full.
  const sniffed = sniff(bytesOf(base64.slice(0, 64)));
  const type = (dataURL && dataURL[1]) || sniffed || (declared ? `${declared}/*` : null);
  const kind = mediaKind(type);
  if (!kind) return null;
  const bytes = bytesOf(base64);
  return bytes && {kind, blob: new Blob([bytes], {type: type.endsWith("/*") ? "" : type})};
}

function bytesOf(base64) {
  try {
    const binary = atob(base64);
    const bytes = new Uint8Array(binary.length);
    for (let index = 0; index < binary.length; index += 1) bytes[index] = binary.charCodeAt(index);
    return bytes;
  } catch {
    return new Uint8Array(0);
  }
}

/** The media type of a file's first bytes (its magic number), for the types browsers play. */
export function sniff(bytes) {
  const ascii = (start, end) => String.fromCharCode(...bytes.slice(start, end));
  if (bytes[0] === 0x89 && ascii(1, 4) === "PNG") return "image/png";
  if (bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return "image/jpeg";
  if (ascii(0, 4) === "GIF8") return "image/gif";
  if (ascii(0, 4) === "RIFF" && ascii(8, 12) === "WEBP") return "image/webp";
  if (ascii(0, 4) === "RIFF" && ascii(8, 12) === "WAVE") return "audio/wav";
  if (ascii(0, 2) === "BM") return "image/bmp";
  if (ascii(0, 4) === "OggS") return "audio/ogg";
  if (ascii(0, 4) === "fLaC") return "audio/flac";
  if (ascii(0, 3) === "ID3") return "audio/mpeg";
  if (ascii(4, 8) === "ftyp") return "video/mp4";
  if (bytes[0] === 0x1a && bytes[1] === 0x45 && bytes[2] === 0xdf && bytes[3] === 0xa3) return "video/webm";
  return null;
}

// --- classification -----------------------------------------------------------------------

/**
 * The classifications in a JSON answer, as deepaas_ui reads them: an object with `labels`
 * and `probabilities` (or `predictions`) lists of one length, or `probabilities` as
 * {label: number}. [{path, title, scores: [[label, number], ...]}].
 */
function findClassifications(value, path, depth, found = []) {
  if (!value || typeof value !== "object" || depth > 4 || found.length >= 12) return found;
  if (!Array.isArray(value)) {
    const scores = scoresOf(value);
    if (scores) found.push({path, title: typeof value.text === "string" ? value.text : null, scores});
  }
  const entries = Array.isArray(value) ? value.slice(0, 32).map((item, index) => [index, item]) : Object.entries(value);
  for (const [key, item] of entries) findClassifications(item, childPath(path, key, Array.isArray(value)), depth + 1, found);
  return found;
}

function scoresOf(value) {
  const numbers = (list) => Array.isArray(list) && list.length > 0 && list.every((item) => typeof item === "number" && Number.isFinite(item));
  const {labels, probabilities, predictions} = value;
  if (Array.isArray(labels) && labels.length) {
    const values = numbers(probabilities) ? probabilities : numbers(predictions) ? predictions : null;
    if (values && values.length === labels.length) return labels.map((label, index) => [String(label), values[index]]);
  }
  if (probabilities && typeof probabilities === "object" && !Array.isArray(probabilities)) {
    const entries = Object.entries(probabilities);
    if (entries.length && entries.every(([, item]) => typeof item === "number")) return entries;
  }
  return null;
}

// Classes shown per chart (deepaas_ui shows the top 5).
const TOP_CLASSES = 5;

function classificationChart({path, title, scores}) {
  const sorted = [...scores].sort((a, b) => b[1] - a[1]);
  const top = sorted.slice(0, TOP_CLASSES);
  const probabilities = scores.every(([, value]) => value >= 0 && value <= 1);
  const largest = Math.max(...top.map(([, value]) => Math.abs(value)), Number.MIN_VALUE);
  const rows = top.map(([label, value]) => {
    const share = probabilities ? value : Math.abs(value) / largest;
    const text = probabilities ? `${(value * 100).toFixed(1)} %` : String(Number(value.toPrecision(4)));
    return h(
      "tr",
      {},
      h("th", {scope: "row"}, label),
      h("td", {class: "bar-cell"}, h("span", {class: "bar", style: `width: ${(share * 100).toFixed(1)}%`, "aria-hidden": "true"})),
      h("td", {class: "bar-value"}, text),
    );
  });
  const more = sorted.length > top.length ? ` (top ${top.length} of ${sorted.length})` : "";
  const caption = `Classification${path ? ` of ${path}` : ""}${title ? `: “${title}”` : ""}${more}`;
  return h("table", {class: "classification"}, h("caption", {}, caption), h("tbody", {}, rows));
}
