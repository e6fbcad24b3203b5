// 3. Layers: the layer list (op, shape, receptive field), a layer's activation grid (dead channels marked),
// one channel enlarged over the image with its statistics, and a clicked unit's receptive field.
import { api, parseNpy } from "../api.js";
import { state, showPanel } from "../state.js";
import { h, clear, field, errorBox, busy, table, fmt } from "../ui.js";
import { blend, colour, drawBox, gridCell, inputCanvas, mapCanvas, receptiveBox } from "../viz.js";

const SHOWN = 256; // channels drawn at first; the rest on request
// What an op name means here, where the graph's own word misleads: ONNX writes ReLU6 as Clip, and an exporter folds
// a BatchNorm into the convolution before it (the built-in model names such a Conv after its BatchNorm: `_bn0`).
const OP_HINTS = {
  Clip: "Clip(0, 6) = ReLU6: a ReLU capped at 6",
  Conv: "a convolution; one named …_bn has its BatchNorm folded into its weights, so its output is already normalised",
};

// The colour scale of the grid: inferno from 0 (or the lowest value, when negative) to the highest value of each
// tile, or of the whole layer. From 0, not from the tile's own lowest: a channel that is 6 everywhere (ReLU6
// saturated) is bright, not a stretched picture of tiny differences.
function legend(scale, lo, hi) {
  const bar = h("canvas", { width: 120, height: 10, class: "legend-bar", "aria-hidden": "true" });
  const ctx = bar.getContext("2d");
  for (let x = 0; x < 120; x++) {
    const [r, g, b] = colour(x / 119, "inferno");
    ctx.fillStyle = `rgb(${r},${g},${b})`;
    ctx.fillRect(x, 0, 1, 10);
  }
  const ends = scale === "layer" ? [fmt(lo, 3), fmt(hi, 3)] : ["0", "its max"];
  return h("div", { class: "colour-legend", id: "layer-legend" },
    h("span", {}, ends[0]), bar, h("span", {}, ends[1]),
    h("span", { class: "notice" }, scale === "layer" ? " one scale for every channel of the layer" :
      " each channel scaled to its own max: compare shapes, not brightness, between tiles"),
    h("span", { class: "dead-key" }, h("span", { class: "swatch" }), " dead: grey, dashed"));
}

export function mount(root) {
  const errors = errorBox();
  const filter = h("input", { type: "search", id: "layer-filter", placeholder: "filter by name or op" });
  const spatialOnly = h("input", { type: "checkbox", id: "layer-spatial", checked: true });
  const list = h("div", { class: "scroll reflow", id: "layer-list" });
  const grid = h("div", { class: "channels", id: "channel-grid", role: "group", "aria-label": "channels" });
  const gridInfo = h("p", { class: "notice", "aria-live": "polite" });
  const enlarged = h("div", { id: "channel-view" });
  const filtersButton = h("button", { type: "button", class: "secondary", id: "show-filters" }, "Show this layer's filters");
  const filtersView = h("div", { id: "filters-view" });
  const scale = h("select", { id: "layer-scale" }, h("option", { value: "channel" }, "each channel to its own max"),
    h("option", { value: "layer" }, "one scale for the layer"));
  const legendBox = h("div", {});
  scale.addEventListener("change", () => maps && drawGrid(grid.childElementCount));
  let maps = null; // {shape:[C,H,W], data}
  let stats = null;

  function renderList() {
    const model = state.get("model");
    if (!model) return clear(list);
    const q = filter.value.trim().toLowerCase();
    const layers = model.layers.filter((l) => (!spatialOnly.checked || l.receptive_field) &&
      (!q || l.name.toLowerCase().includes(q) || l.op.toLowerCase().includes(q)));
    const t = table([
      { label: "Layer", value: (l) => h("code", {}, l.name) },
      { label: "Op", value: (l) => OP_HINTS[l.op] ? h("abbr", { title: OP_HINTS[l.op] }, l.op === "Clip" ? "Clip (ReLU6)" : l.op) : l.op },
      { label: "Shape C×H×W", value: (l) => l.shape.join("×") },
      { label: "Receptive field", value: (l) => l.receptive_field ? `${l.receptive_field.size} px, stride ${l.receptive_field.stride}` : "—" },
    ], layers);
    t.querySelectorAll("tbody tr").forEach((tr, i) => {
      tr.tabIndex = 0;
      tr.dataset.layer = layers[i].name;
      tr.setAttribute("aria-selected", String(layers[i].name === state.get("layer")));
      if (layers[i].name === state.get("layer")) tr.classList.add("selected");
      const choose = () => state.set("layer", layers[i].name);
      tr.addEventListener("click", choose);
      tr.addEventListener("keydown", (e) => (e.key === "Enter" || e.key === " ") && (e.preventDefault(), choose()));
    });
    clear(list, t);
  }

  const layerInfo = () => state.get("model")?.layers.find((l) => l.name === state.get("layer"));

  async function loadActivations() {
    const model = state.get("model");
    const image = state.get("image");
    const layer = layerInfo();
    clear(grid);
    clear(enlarged);
    clear(filtersView);
    filtersButton.hidden = !layer || layer.op !== "Conv";
    maps = stats = null;
    if (!model || !layer) return (gridInfo.textContent = "Choose a layer.");
    if (!image) return (gridInfo.textContent = "Choose an image in the Image panel first.");
    gridInfo.textContent = `loading ${layer.name}…`;
    await busy(null, errors, async () => {
      const body = { image: { id: image.id }, layer: layer.name };
      const [npy, json] = await Promise.all([
        api.activations(model.id, { ...body, format: "npy" }).then((r) => r.arrayBuffer()),
        api.activations(model.id, { ...body, format: "json" }).then((r) => r.json()),
      ]);
      maps = parseNpy(npy);
      stats = json.stats;
      drawGrid(SHOWN);
    });
  }

  function drawGrid(limit) {
    const [channels, rows, cols] = maps.shape;
    const dead = new Set(stats.dead_channels);
    const shown = Math.min(channels, limit);
    const buttons = [];
    // lo..hi of values start..end (lo at most 0); a range of one value is drawn as its low end (all 0: black).
    const range = (start, end) => {
      let [lo, hi] = [0, -Infinity];
      for (let i = start; i < end; i++) {
        const v = maps.data[i];
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
      return { lo, hi: hi > lo ? hi : lo + 1 };
    };
    const layerRange = range(0, channels * rows * cols);
    clear(legendBox, legend(scale.value, layerRange.lo, layerRange.hi));
    for (let c = 0; c < shown; c++) {
      const scaled = scale.value === "layer" ? layerRange : range(c * rows * cols, (c + 1) * rows * cols);
      const button = h("button", { type: "button", class: dead.has(c) ? "dead" : "", "data-channel": c, "aria-pressed": "false",
        "aria-label": `channel ${c}${dead.has(c) ? " (dead)" : ""}, max ${fmt(stats.max[c])}` },
      mapCanvas(maps.data, rows, cols, { offset: c * rows * cols, map: "inferno", ...scaled }), h("span", {}, c));
      button.addEventListener("click", () => state.set("channel", c));
      buttons.push(button);
    }
    clear(grid, buttons);
    const more = channels > shown ? h("button", { type: "button", class: "secondary" }, `show all ${channels}`) : null;
    if (more) more.addEventListener("click", () => drawGrid(channels));
    clear(gridInfo, `${channels} channels of ${rows}×${cols}; ${dead.size} dead (never positive on this image), drawn grey with a dashed border. ` +
      "Click a channel to enlarge it.", more ? " " : "", more);
    if (state.get("channel") !== null && state.get("channel") < channels) showChannel(state.get("channel"));
  }

  function showChannel(c) {
    const model = state.get("model");
    const image = state.get("image");
    const layer = layerInfo();
    if (!maps || !layer || c === null || c >= maps.shape[0]) return clear(enlarged);
    grid.querySelectorAll("button[data-channel]").forEach((b) => b.setAttribute("aria-pressed", String(Number(b.dataset.channel) === c)));
    const [, rows, cols] = maps.shape;
    const heat = mapCanvas(maps.data, rows, cols, { offset: c * rows * cols, map: "inferno", alpha: true });
    const overlay = h("canvas", { class: "overlay", width: model.input.width, height: model.input.height });
    const view = blend(inputCanvas(image.element, model), heat, { label: `channel ${c} opacity`, opacity: 0.75 });
    view.stack.append(overlay);
    view.stack.id = "channel-stack";
    const unitInfo = h("p", { class: "notice", id: "unit-info", "aria-live": "polite" },
      layer.receptive_field ? "Click a unit on the map to draw its receptive field." : "");
    view.stack.addEventListener("click", (e) => {
      const [y, x] = gridCell(e, view.stack, rows, cols);
      const value = maps.data[c * rows * cols + y * cols + x];
      if (!layer.receptive_field) return;
      const box = receptiveBox(layer.receptive_field, y, x);
      drawBox(overlay, box);
      unitInfo.textContent = `unit at (row ${y}, column ${x}) = ${fmt(value, 4)}: sees input pixels x ${box[0]}…${box[2] - 1}, y ${box[1]}…${box[3] - 1} ` +
        `(${layer.receptive_field.size} px field, stride ${layer.receptive_field.stride})`;
    });
    const featureVis = h("button", { type: "button", class: "secondary", id: "channel-feature-vis" }, "Feature visualization of this channel");
    featureVis.addEventListener("click", () => {
      state.set("make-request", { kind: "feature_vis", params: { layer: layer.name, channel: c } });
      showPanel("making");
    });
    const top = h("button", { type: "button", class: "secondary" }, "Top dataset patches");
    top.addEventListener("click", () => showPanel("datasets"));
    clear(enlarged, h("h3", {}, `${layer.name} · channel ${c}`), view, unitInfo,
      h("dl", { class: "metrics", id: "channel-stats" },
        h("dt", {}, "max"), h("dd", {}, fmt(stats.max[c], 4)),
        h("dt", {}, "mean"), h("dd", {}, fmt(stats.mean[c], 4)),
        h("dt", {}, "fraction zero"), h("dd", {}, fmt(stats.fraction_zero[c], 3)),
        h("dt", {}, "dead"), h("dd", {}, stats.dead_channels.includes(c) ? "yes" : "no")),
      h("div", { class: "actions" }, featureVis, top));
  }

  filtersButton.addEventListener("click", () => busy(filtersButton, errors, async () => {
    const model = state.get("model");
    const layer = layerInfo();
    if (!model || !layer) return;
    const url = await api.filters(model.id, layer.name);
    clear(filtersView, h("img", { src: url, class: "picture pixelated", id: "filters-image", alt: `filters of ${layer.name}` }));
  }));

  filter.addEventListener("input", renderList);
  spatialOnly.addEventListener("change", renderList);
  root.append(
    h("h2", {}, "Layers"),
    h("p", { class: "intro" }, "What each layer computes on the current image. Receptive fields are in the model's input pixels. " +
      "Clip is ReLU6 (a ReLU capped at 6); a Conv named …_bn has its BatchNorm folded into its weights by the export."),
    h("div", { class: "row" },
      h("div", { class: "card grow" }, h("div", { class: "actions" }, field("Filter", filter),
        h("label", {}, spatialOnly, " spatial layers only")), list),
      h("div", { class: "card grow" }, h("h3", {}, "Activations"), field("colour scale", scale), legendBox, gridInfo, grid, errors,
        h("div", { class: "actions" }, filtersButton), filtersView)),
    h("div", { class: "card" }, enlarged));
  state.on("model", renderList);
  state.on("layer", () => {
    renderList();
    loadActivations();
  });
  state.on("image", loadActivations);
  state.on("channel", (c) => showChannel(c));
}
