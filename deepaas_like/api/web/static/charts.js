// Line charts of a training's metrics (uPlot): x is the step the plugin reported, y the
// metric's value. Each chart is a <figure> with a caption and a line of text that says what
// the curve shows (last value, minimum, maximum), for people who cannot see the canvas.
import uPlot from "./vendor/uplot/uPlot.esm.js";
import {h} from "./dom.js";

const HEIGHT = 220;
// Distinct on white and for the common colour-vision deficiencies (Okabe–Ito palette).
const COLOURS = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#b8a000"];

/** A number as a chart's text gives it: up to 4 significant digits. */
export function metricText(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  return Math.abs(value) >= 1e5 || (value !== 0 && Math.abs(value) < 1e-3) ? value.toExponential(3) : String(Number(value.toPrecision(4)));
}

// An axis tick: few digits, as the ticks are round numbers (uPlot's own ticks repeat
// "0.001" when a loss moves in its fourth decimal).
function tickText(value) {
  if (value === 0) return "0";
  if (Math.abs(value) >= 1e5 || Math.abs(value) < 1e-3) return value.toExponential(2).replace(/\.?0+e/, "e");
  return String(Number(value.toPrecision(4)));
}

function figure(metric, caption) {
  const plot = h("div", {class: "chart-plot", role: "img", "aria-label": `Line chart of ${metric} by step`});
  const summary = h("p", {class: "chart-summary"});
  const element = h("figure", {class: "chart", dataset: {metric, points: "0"}}, h("figcaption", {}, caption), plot, summary);
  return {element, plot, summary};
}

function options(metric, width, series, legend = {}) {
  return {
    legend,
    width,
    height: HEIGHT,
    scales: {x: {time: false}},
    axes: [{label: "step"}, {label: metric, size: 64, values: (chart, ticks) => ticks.map(tickText)}],
    cursor: {drag: {x: false, y: false}},
    series: [{label: "step"}, ...series],
  };
}

// Keep the chart as wide as its box (a phone's width, a window made narrower).
function fitWidth(chart, plot) {
  const observer = new ResizeObserver(() => {
    const width = Math.floor(plot.clientWidth);
    if (width > 0 && width !== chart.width) chart.setSize({width, height: HEIGHT});
  });
  observer.observe(plot);
  return observer;
}

function extremes(values) {
  const numbers = values.filter((value) => value !== null && value !== undefined);
  if (!numbers.length) return null;
  return {min: Math.min(...numbers), max: Math.max(...numbers), last: numbers[numbers.length - 1]};
}

/**
 * A live chart of one metric: {element, add(step, value), points(), destroy()}.
 * add() puts the point at its step (a step seen before keeps its first value; a step
 * lower than the last is put in its place), redraws, and updates the text.
 */
export function metricChart(metric, caption = metric) {
  const {element, plot, summary} = figure(metric, caption);
  const steps = [];
  const values = [];
  const chart = new uPlot(options(metric, 600, [{label: metric, stroke: COLOURS[0], width: 2, points: {show: true, size: 4}}]), [steps, values], plot);
  const observer = fitWidth(chart, plot);
  const describe = () => {
    const found = extremes(values);
    element.dataset.points = String(steps.length);
    summary.textContent = found
      ? `${steps.length} steps; last ${metricText(found.last)} at step ${steps[steps.length - 1]}; min ${metricText(found.min)}, max ${metricText(found.max)}.`
      : "No value yet.";
  };
  describe();
  return {
    element,
    add(step, value) {
      let at = steps.length;
      while (at > 0 && steps[at - 1] > step) at -= 1;
      if (at > 0 && steps[at - 1] === step) return;
      steps.splice(at, 0, step);
      values.splice(at, 0, value);
      chart.setData([steps, values]);
      describe();
    },
    points: () => steps.length,
    destroy() {
      observer.disconnect();
      chart.destroy();
    },
  };
}

/**
 * A chart comparing one metric across trainings: series is [{label, points: [[step, value]]}],
 * one line each. Returns {element, destroy()}.
 */
export function compareChart(metric, series, caption = metric) {
  const {element, plot, summary} = figure(metric, caption);
  const tables = series.map(({points}) => {
    const sorted = [...points].sort((a, b) => a[0] - b[0]);
    return [sorted.map((point) => point[0]), sorted.map((point) => point[1])];
  });
  const data = tables.length ? uPlot.join(tables) : [[]];
  const lines = series.map(({label}, index) => ({label, stroke: COLOURS[index % COLOURS.length], width: 2, spanGaps: true, points: {show: true, size: 4}}));
  // The legend names the lines (its values under the cursor would be one line per training).
  const chart = new uPlot(options(metric, 600, lines, {live: false}), data, plot);
  const observer = fitWidth(chart, plot);
  element.dataset.points = String(data[0].length);
  element.dataset.series = String(series.length);
  summary.textContent = series
    .map(({label, points}) => {
      const found = extremes(points.map((point) => point[1]));
      return found ? `${label}: last ${metricText(found.last)}, min ${metricText(found.min)}` : `${label}: no value`;
    })
    .join("; ");
  return {
    element,
    destroy() {
      observer.disconnect();
      chart.destroy();
    },
  };
}
