// Drawing: the image as the model sees it (the service's resize + centre-crop geometry), maps through a
// colour map, heatmaps blended over the image with a slider, receptive-field boxes.
import { h, field } from "./ui.js";

// Where `core.images.placement` puts an original width × height image in the model's input: torchvision's
// Resize(short side → resize) then CenterCrop(H, W); with no resize (or crop false) a plain resize.
export function placement(width, height, model) {
  const { height: inH, width: inW } = model.input;
  const pre = model.preprocess;
  if (pre.resize === null || pre.resize === undefined || pre.crop === false) return { resized: [inW, inH], left: 0, top: 0 };
  const tall = width <= height;
  const [short, long] = tall ? [width, height] : [height, width];
  const newLong = Math.floor((pre.resize * long) / short);
  const [newW, newH] = tall ? [pre.resize, newLong] : [newLong, pre.resize];
  const offset = (outer, inner) => (inner > outer ? -Math.floor((inner - outer) / 2) : Math.round((outer - inner) / 2));
  return { resized: [newW, newH], left: offset(newW, inW), top: offset(newH, inH) };
}

// A canvas of the model's input size showing `img` (a loaded <img>) where the model sees it.
export function inputCanvas(img, model) {
  const { height, width } = model.input;
  const canvas = h("canvas", { width, height });
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, width, height);
  const where = placement(img.naturalWidth, img.naturalHeight, model);
  ctx.drawImage(img, -where.left, -where.top, where.resized[0], where.resized[1]);
  return canvas;
}

// Colour maps as a few stops, interpolated (close to matplotlib's viridis and inferno).
const MAPS = {
  viridis: [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]],
  inferno: [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]],
  coolwarm: [[59, 76, 192], [141, 176, 254], [221, 221, 221], [244, 154, 123], [180, 4, 38]],
};

export function colour(t, map = "viridis") {
  const stops = MAPS[map];
  const x = Math.min(Math.max(t, 0), 1) * (stops.length - 1);
  const i = Math.min(Math.floor(x), stops.length - 2);
  const f = x - i;
  return stops[i].map((c, k) => Math.round(c + (stops[i + 1][k] - c) * f));
}

// A rows × cols array (row-major Float32Array at `offset`) → canvas, values scaled lo..hi.
export function mapCanvas(data, rows, cols, { offset = 0, lo, hi, map = "viridis", alpha = false } = {}) {
  let min = lo;
  let max = hi;
  if (min === undefined || max === undefined) {
    min = Infinity;
    max = -Infinity;
    for (let i = 0; i < rows * cols; i++) {
      const v = data[offset + i];
      if (v < min) min = v;
      if (v > max) max = v;
    }
  }
  const span = max - min || 1;
  const canvas = h("canvas", { width: cols, height: rows });
  const ctx = canvas.getContext("2d");
  const pixels = ctx.createImageData(cols, rows);
  for (let i = 0; i < rows * cols; i++) {
    const t = (data[offset + i] - min) / span;
    const [r, g, b] = colour(t, map);
    pixels.data.set([r, g, b, alpha ? Math.round(255 * Math.min(Math.max(t, 0), 1)) : 255], i * 4);
  }
  ctx.putImageData(pixels, 0, 0);
  return canvas;
}

// An attribution (C×H×W or 1×h×w) → one h×w map: |values| summed over channels, scaled to its 99.5th percentile.
export function attributionMap({ shape, data }) {
  const [channels, rows, cols] = shape.length === 3 ? shape : [1, ...shape.slice(-2)];
  const out = new Float32Array(rows * cols);
  for (let c = 0; c < channels; c++) for (let i = 0; i < rows * cols; i++) out[i] += Math.abs(data[c * rows * cols + i]);
  const sorted = Float32Array.from(out).sort();
  const top = sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.995))] || 1;
  for (let i = 0; i < out.length; i++) out[i] = Math.min(out[i] / top, 1);
  return { rows, cols, data: out };
}

// The image (a canvas at input size) with a heatmap canvas stretched over it and a slider for its opacity.
export function blend(base, heat, { label = "heatmap opacity", opacity = 0.6 } = {}) {
  base.classList.add("layer-base");
  heat.classList.add("layer-heat");
  heat.style.opacity = String(opacity);
  const slider = h("input", { type: "range", min: 0, max: 1, step: 0.05, value: opacity });
  slider.addEventListener("input", () => (heat.style.opacity = slider.value));
  const stack = h("div", { class: "stack" }, base, heat);
  const view = h("div", { class: "blend" }, stack, field(label, slider));
  view.stack = stack;
  view.slider = slider;
  return view;
}

// Draw an input-pixel box [x0, y0, x1, y1) on an overlay canvas the size of the input.
export function drawBox(canvas, box, colourName = "#ff3b30") {
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!box) return;
  const [x0, y0, x1, y1] = box;
  ctx.lineWidth = Math.max(1, canvas.width / 160);
  ctx.strokeStyle = colourName;
  ctx.strokeRect(x0 + 0.5, y0 + 0.5, x1 - x0 - 1, y1 - y0 - 1);
  ctx.fillStyle = "rgba(255, 59, 48, 0.12)";
  ctx.fillRect(x0, y0, x1 - x0, y1 - y0);
}

// The receptive field of unit (y, x) of a layer, in input pixels [x0, y0, x1, y1).
export function receptiveBox(rf, y, x) {
  const x0 = rf.start + x * rf.stride;
  const y0 = rf.start + y * rf.stride;
  return [x0, y0, x0 + rf.size, y0 + rf.size];
}

// Where an event on an element falls on a rows × cols grid drawn over it.
export function gridCell(event, el, rows, cols) {
  const r = el.getBoundingClientRect();
  const x = Math.floor(((event.clientX - r.left) / r.width) * cols);
  const y = Math.floor(((event.clientY - r.top) / r.height) * rows);
  return [Math.min(Math.max(y, 0), rows - 1), Math.min(Math.max(x, 0), cols - 1)];
}

export const imageFrom = (src, alt = "") =>
  new Promise((resolve, reject) => {
    const img = h("img", { alt });
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`the picture ${alt} could not be shown`));
    img.src = src;
  });

// --- small charts as inline SVG (no library: the explorer has no build step) -----------------------------
const SVG_NS = "http://www.w3.org/2000/svg";

// `h` for SVG elements (they need their namespace).
function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) if (value !== undefined && value !== null) el.setAttribute(name, value);
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// A y axis from 0 to the smallest "round" top above `max` (1, 2, 2.5 or 5 × a power of ten), ticked at round
// steps (0.2, 0.5, 0.5, 1 × that power) so that the labels read well.
function niceAxis(max) {
  const power = max > 0 ? 10 ** Math.floor(Math.log10(max)) : 0.1;
  const [top, step] = [[1, 0.2], [2, 0.5], [2.5, 0.5], [5, 1], [10, 2]].map(([t, s]) => [t * power, s * power])
    .find(([t]) => t >= max);
  return { top, ticks: Array.from({ length: Math.round(top / step) + 1 }, (_, i) => i * step) };
}

const tick = (value) => String(Number(value.toFixed(4)));

// A line chart: `series` [{label, x: [...], y: [...], colour, dash}] on x 0…xMax and y 0…(a round top above the
// data), labelled axes, a dashed `reference` line ({label, y}) and an HTML legend below (it never hides a curve).
// Each point has a <title>, so hovering it tells its values. `xFormat` writes x tick labels and point values.
export function lineChart(series, { width = 320, height = 180, xLabel = "", yLabel = "", xMax = 1, reference = null,
  xFormat = tick, yFormat = tick, label = "chart" } = {}) {
  const margin = { left: 46, right: 16, top: 10, bottom: 38 };
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  const values = series.flatMap((s) => s.y).concat(reference ? [reference.y] : []).filter(Number.isFinite);
  const { top: yMax, ticks: yTicks } = niceAxis(Math.max(...values, 0));
  const px = (x) => margin.left + (x / xMax) * plotW;
  const py = (y) => margin.top + plotH - (Math.min(Math.max(y, 0), yMax) / yMax) * plotH;
  const grid = [
    yTicks.map((y) => [
      svg("line", { x1: margin.left, x2: margin.left + plotW, y1: py(y), y2: py(y), class: "grid" }),
      svg("text", { x: margin.left - 5, y: py(y) + 3.5, "text-anchor": "end" }, yFormat(y)),
    ]),
    [0, 0.25, 0.5, 0.75, 1].map((t) => [
      svg("line", { x1: px(t * xMax), x2: px(t * xMax), y1: margin.top + plotH, y2: margin.top + plotH + 4, class: "axis" }),
      svg("text", { x: px(t * xMax), y: margin.top + plotH + 15, "text-anchor": "middle" }, xFormat(t * xMax)),
    ]),
  ];
  const lines = series.map((s) => svg("g", { class: "series", "data-series": s.label },
    svg("polyline", { points: s.x.map((x, i) => `${px(x).toFixed(1)},${py(s.y[i]).toFixed(1)}`).join(" "), fill: "none",
      stroke: s.colour, "stroke-width": 2, "stroke-dasharray": s.dash }),
    s.x.map((x, i) => svg("circle", { cx: px(x), cy: py(s.y[i]), r: 2.6, fill: s.colour },
      svg("title", {}, `${s.label}: ${xFormat(x)} → ${yFormat(s.y[i])}`)))));
  const ref = reference && Number.isFinite(reference.y)
    ? svg("line", { x1: margin.left, x2: margin.left + plotW, y1: py(reference.y), y2: py(reference.y), class: "reference" },
      svg("title", {}, `${reference.label}: ${yFormat(reference.y)}`))
    : null;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": label, class: "chart" },
    grid,
    svg("line", { x1: margin.left, x2: margin.left, y1: margin.top, y2: margin.top + plotH, class: "axis" }),
    svg("line", { x1: margin.left, x2: margin.left + plotW, y1: margin.top + plotH, y2: margin.top + plotH, class: "axis" }),
    ref, lines,
    svg("text", { x: margin.left + plotW / 2, y: height - 4, "text-anchor": "middle", class: "axis-label" }, xLabel),
    svg("text", { x: 11, y: margin.top + plotH / 2, "text-anchor": "middle", class: "axis-label",
      transform: `rotate(-90 11 ${margin.top + plotH / 2})` }, yLabel));
  const swatch = (colour) => {
    const el = h("span", { class: "swatch" });
    el.style.background = colour; // through the CSSOM: the page's CSP refuses style attributes
    return el;
  };
  const legend = h("ul", { class: "legend" },
    series.map((s) => h("li", {}, swatch(s.colour), s.label)),
    ref ? h("li", {}, h("span", { class: "swatch dashed" }), reference.label) : null);
  return h("figure", { class: "chart" }, chart, legend);
}
