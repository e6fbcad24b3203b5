// 10. Units of a layer: the current image's neuron groups at a layer (NMF, as Building Blocks' semantic dictionary:
// the groups over the photo with a legend; a click on a group shows its feature visualization and top channels),
// its caricature, and a unit's circuit: the units of the layer before with the largest expanded weights into it,
// each with its weight window coloured by sign and, on demand, its feature visualization (a `layer_atlas` job of
// those channels: its unit cache keeps every icon made before, so only missing ones are made).
import { api } from "../api.js";
import { state } from "../state.js";
import { h, clear, field, errorBox, paramsForm, busy, fmt } from "../ui.js";
import { jobCard, showCard } from "../job_card.js";

const WINDOW = 48; // pixels a weight window spans at least (its longer side); each weight at least 12 px

// A signed kh×kw window on a canvas: red positive, blue negative, white zero, on the scale `peak`.
export function weightGrid(weights, peak) {
  const rows = weights.length;
  const cols = weights[0]?.length || 0;
  const cell = Math.max(12, Math.floor(WINDOW / Math.max(rows, cols, 1)));
  const canvas = h("canvas", { width: cols * cell, height: rows * cell, class: "weight-grid" });
  const ctx = canvas.getContext("2d");
  weights.forEach((row, y) => row.forEach((w, x) => {
    const t = Math.min(Math.abs(w) / (peak || 1), 1);
    const fade = Math.round(255 * (1 - t));
    ctx.fillStyle = w >= 0 ? `rgb(255,${fade},${fade})` : `rgb(${fade},${fade},255)`;
    ctx.fillRect(x * cell, y * cell, cell, cell);
  }));
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", `${rows}×${cols} weights, sum ${fmt(weights.flat().reduce((a, b) => a + b, 0), 3)}`);
  return canvas;
}

// A unit's circuit, loaded now: one card per input unit (its weights, layer, channel, sum and norm), and a button that
// makes (or takes from the atlas cache) the input units' feature visualizations. `onOpen(layer, channel)` is called
// when an input is clicked (to follow the circuit back).
export function unitCircuit(layer, channel, { k = 8, onOpen = null } = {}) {
  const errors = errorBox();
  const box = h("div", { class: "circuit", id: "unit-circuit" }, h("p", { class: "notice" }, `loading the circuit of ${layer} · channel ${channel}…`));
  const model = state.get("model");
  if (!model) return box;
  api.circuit(model.id, layer, channel, k).then((circuit) => {
    const peak = Math.max(...circuit.inputs.map((i) => Math.max(...i.weights.flat().map(Math.abs))), 1e-12);
    const icons = new Map();
    const cards = circuit.inputs.map((input) => {
      const icon = h("div", { class: "circuit-icon" });
      icons.set(`${input.layer}|${input.channel}`, icon);
      const open = h("button", { type: "button", class: "link", title: "open this unit's circuit" },
        `${input.layer} · ${input.channel}`);
      if (onOpen) open.addEventListener("click", () => onOpen(input.layer, input.channel));
      return h("figure", { class: "circuit-input", dataset: { layer: input.layer, channel: input.channel } }, icon,
        weightGrid(input.weights, peak),
        h("figcaption", { class: "notice" }, onOpen ? open : `${input.layer} · ${input.channel}`,
          h("br"), `weight ${fmt(input.weight, 3)} · norm ${fmt(input.norm, 3)}`));
    });
    const make = h("button", { type: "button", class: "secondary", id: "circuit-icons" }, "Feature visualizations of the inputs");
    const jobs = h("div", { class: "jobs-grid" });
    make.addEventListener("click", () => inputIcons(circuit, icons, jobs));
    clear(box, h("h4", {}, `Circuit of ${layer} · channel ${channel}`),
      h("p", { class: "notice" }, `The ${circuit.inputs.length} strongest of ${circuit.sources.join(" and ")}, by the norm of ` +
        `their expanded weights into the unit at [${circuit.position.join(", ")}] (red positive, blue negative).`),
      h("div", { class: "circuit-inputs" }, cards), h("div", { class: "actions" }, make), errors, jobs);
  }).catch((error) => {
    clear(box);
    box.append(errors);
    errors.show(error);
  });
  return box;
}

// One layer_atlas job per source layer, for the circuit's input channels; each icon goes into its card.
function inputIcons(circuit, icons, jobs) {
  const model = state.get("model");
  const bySource = new Map();
  for (const input of circuit.inputs) {
    if (!model.layers.some((l) => l.name === input.layer)) continue; // the model's input has no icon
    bySource.set(input.layer, [...(bySource.get(input.layer) || []), input.channel]);
  }
  for (const [layer, channels] of bySource) {
    const spec = { kind: "layer_atlas", model: model.id, params: { layer, channels, size: 48, steps: 64 } };
    showCard(jobs, jobCard(`icons of ${layer}`, spec, { render: async (job) => {
      const entries = await api.artifactJson(job.id, "atlas.json");
      for (const entry of entries) {
        const slot = icons.get(`${layer}|${entry.channel}`);
        if (slot) clear(slot, h("img", { src: await api.artifact(job.id, entry.images[0]), class: "picture unit-icon",
          alt: `feature visualization of ${layer} · channel ${entry.channel}` }));
      }
    } }));
  }
}

export function mount(root) {
  const errors = errorBox();
  const groupsForm = h("div", { id: "groups-params" });
  const runGroups = h("button", { type: "button", id: "groups-run" }, "Find the neuron groups");
  const runCaricature = h("button", { type: "button", class: "secondary", id: "caricature-run" }, "Caricature at this layer");
  const jobs = h("div", { class: "jobs-grid", id: "units-jobs" });
  const layer = h("select", { id: "circuit-layer" });
  const channel = h("input", { type: "number", id: "circuit-channel", min: 0, value: 0 });
  const k = h("input", { type: "number", id: "circuit-k", min: 1, max: 64, value: 8 });
  const showCircuit = h("button", { type: "button", id: "circuit-run" }, "Show the circuit");
  const circuitErrors = errorBox();
  const circuit = h("div", { id: "circuit-view" });
  let form = null;

  function renderForm() {
    const schema = state.kindParams("neuron_groups");
    if (!schema) return clear(groupsForm, h("p", { class: "notice" }, "this service offers no neuron_groups jobs"));
    const current = state.get("layer");
    form = paramsForm(schema, { values: current ? { layer: current } : {}, main: ["layer", "groups", "top_channels", "steps", "size", "seed"] });
    clear(groupsForm, form);
  }

  function renderLayers() {
    const model = state.get("model");
    const keep = layer.value || state.get("layer");
    clear(layer, (model?.layers || []).map((l) => h("option", { value: l.name, selected: l.name === keep }, `${l.name} (${l.op}, ${l.shape[0]} ch)`)));
  }

  function imageSpec(kind, params) {
    const model = state.get("model");
    const image = state.get("image");
    if (!model) throw { code: "no_model", message: "choose a model first" };
    if (!image) throw { code: "no_image", message: "choose an image in the Image panel first" };
    return { kind, model: model.id, image: { id: image.id }, params };
  }

  runGroups.addEventListener("click", () => {
    errors.show(null);
    try {
      const spec = imageSpec("neuron_groups", form.read());
      showCard(jobs, jobCard("neuron groups", spec, { className: "wide", render: (job, body) => showGroups(job, body) }));
    } catch (error) {
      errors.show(error);
    }
  });

  runCaricature.addEventListener("click", () => {
    errors.show(null);
    try {
      const params = form ? form.read() : {};
      const spec = imageSpec("caricature", params.layer ? { layer: params.layer } : {});
      showCard(jobs, jobCard("caricature", spec, { render: async (job, body) => {
        body.append(h("img", { src: await api.artifact(job.id, "image.png"), class: "picture made", alt: "caricature" }));
      } }));
    } catch (error) {
      errors.show(error);
    }
  });

  // The groups over the photo, a legend below it; a click on a group shows its icon and its top channels, and a
  // click on a channel shows that unit's circuit.
  async function showGroups(job, body) {
    const groups = await api.artifactJson(job.id, "groups.json");
    const detail = h("div", { class: "group-detail", id: "group-detail" });
    const open = async (group) => {
      for (const item of legend.querySelectorAll("button")) item.setAttribute("aria-pressed", String(item.dataset.group === String(group.group)));
      const icon = await api.artifact(job.id, group.image);
      clear(detail, h("figure", {}, h("img", { src: icon, class: "picture unit-image", alt: `feature visualization of group ${group.group}` }),
        h("figcaption", { class: "notice" }, `group ${group.group} · ${fmt(100 * group.share, 1)} % of the activations`)),
      h("div", {}, h("h4", {}, "Top channels"), h("ol", { class: "group-channels" }, group.channels.map((c) => {
        const link = h("button", { type: "button", class: "link" }, `channel ${c} · ${fmt(group.weight[c], 3)}`);
        link.addEventListener("click", () => openCircuit(job.params.layer, c));
        return h("li", {}, link);
      }))));
    };
    const legend = h("ul", { class: "groups-legend", id: "groups-legend" }, groups.map((group) => {
      const swatch = h("span", { class: "group-swatch" });
      swatch.style.background = group.color; // through the CSSOM: the page's CSP allows no style attributes
      const item = h("button", { type: "button", "aria-pressed": "false", dataset: { group: group.group } }, swatch,
        `group ${group.group} · ${fmt(100 * group.share, 1)} % · channels ${group.channels.slice(0, 3).join(", ")}`);
      item.addEventListener("click", () => open(group));
      return h("li", {}, item);
    }));
    body.append(h("div", { class: "row" },
      h("figure", {}, h("img", { src: await api.artifact(job.id, "groups.png"), class: "picture", id: "groups-picture",
        alt: `the ${groups.length} neuron groups of ${job.params.layer} over the image` }),
      h("figcaption", { class: "notice" }, `${job.params.layer}: ${groups.length} groups explain ` +
        `${fmt(100 * job.result.metrics.explained, 1)} % of the activations`)),
      h("div", {}, legend, detail)));
    if (groups.length) await open(groups[0]);
  }

  function openCircuit(name, c) {
    layer.value = name;
    channel.value = c;
    show();
  }

  function show() {
    circuitErrors.show(null);
    const chosen = state.get("model")?.layers?.find((l) => l.name === layer.value);
    if (!chosen) return circuitErrors.show({ code: "no_layer", message: "choose a model and a layer" });
    clear(circuit, unitCircuit(layer.value, Number(channel.value), { k: Number(k.value) || 8, onOpen: openCircuit }));
    circuit.scrollIntoView({ block: "nearest" });
  }
  showCircuit.addEventListener("click", () => busy(showCircuit, circuitErrors, async () => show()));

  root.append(
    h("h2", {}, "Units"),
    h("p", { class: "intro" }, "A layer as a few neuron groups (NMF of its activations on the current image, as in Building " +
      "Blocks), the image that most amplifies what the layer sees in it, and a unit's circuit: the units before it with " +
      "the largest expanded weights into it."),
    h("div", { class: "card" }, h("h3", {}, "Neuron groups of the current image"), groupsForm,
      h("div", { class: "actions" }, runGroups, runCaricature), errors),
    jobs,
    h("div", { class: "card" }, h("h3", {}, "Circuit of a unit"),
      h("div", { class: "row" }, field("layer", layer), field("channel", channel), field("inputs (k)", k)),
      h("div", { class: "actions" }, showCircuit), circuitErrors, circuit));
  state.on("schema", renderForm);
  state.on("layer", renderForm);
  state.on("model", renderLayers);
  state.on("models", renderLayers);
  mount.shown = () => {
    renderLayers();
    if (!form) renderForm();
  };
}

export const shown = () => mount.shown && mount.shown();
