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
