// 9. Atlases: a layer's page (every channel's feature visualization on one grid, filling in as the job runs;
// click a channel for its unit page: diversity variants, top dataset patches, statistics, and jobs that
// project its top patch back to pixels or dream it into the image), and an activation atlas with zoom and
// hover (count and class of each cell).
import { api } from "../api.js";
import { state } from "../state.js";
import { h, clear, field, errorBox, paramsForm, table, fmt } from "../ui.js";
import { jobCard, showCard } from "../job_card.js";
import { datasetLabel, datasetThumb } from "./datasets.js";
import { unitCircuit } from "./units.js";

export function mount(root) {
  const errors = errorBox();
  const listErrors = errorBox(); // the dataset list's own: cleared as soon as the list loads
  const dataset = h("select", { id: "atlas-dataset" });
  const layerForm = h("div", { id: "layer-atlas-params" });
  const activationForm = h("div", { id: "activation-atlas-params" });
  const buildLayer = h("button", { type: "button", id: "layer-atlas-run" }, "Build the layer atlas");
  const buildActivation = h("button", { type: "button", id: "activation-atlas-run" }, "Build the activation atlas");
  const jobs = h("div", { class: "jobs-grid", id: "atlas-jobs" });
  const page = h("div", { id: "atlas-page" });
  const unit = h("div", { id: "unit-page" });
  let forms = {};

  function renderForms() {
    const layer = state.get("layer") || undefined;
    const values = layer ? { layer } : {};
    if (state.kindParams("layer_atlas")) {
      forms.layer_atlas = paramsForm(state.kindParams("layer_atlas"), { values,
        main: ["layer", "channels", "steps", "size", "diversity", "k"] });
      clear(layerForm, forms.layer_atlas);
    }
    if (state.kindParams("activation_atlas")) {
      forms.activation_atlas = paramsForm(state.kindParams("activation_atlas"), { values,
        main: ["layer", "grid", "positions_per_image", "method", "steps", "size"] });
      clear(activationForm, forms.activation_atlas);
    }
  }

  async function refreshDatasets() {
    try {
      const { datasets } = await api.datasets();
      const keep = dataset.value;
      clear(dataset, h("option", { value: "" }, "none (no patches, no statistics)"),
        datasets.map((d) => h("option", { value: d.id, selected: d.id === keep, title: d.id }, datasetLabel(d))));
      listErrors.show(null);
    } catch (error) {
      listErrors.show(error);
    }
  }

  function start(kind, render) {
    errors.show(null);
    const model = state.get("model");
    if (!model) return errors.show({ code: "no_model", message: "choose a model first" });
    if (kind === "activation_atlas" && !dataset.value) {
      return errors.show({ code: "no_dataset", message: "an activation atlas needs a dataset: upload one in the Datasets panel" });
    }
    let params;
    try {
      params = forms[kind].read();
    } catch {
      return errors.show({ code: "bad_params", message: "a parameter is not valid JSON (channels: [0, 1, 2])" });
    }
    const spec = { kind, model: model.id, params, ...(dataset.value ? { dataset: dataset.value } : {}) };
    showCard(jobs, jobCard(kind, spec, { render: (job, body) => render(job, body, spec.dataset), className: "wide" }));
  }

  buildLayer.addEventListener("click", () => start("layer_atlas", showLayerAtlas));
  buildActivation.addEventListener("click", () => start("activation_atlas", showActivationAtlas));

  // --- the layer page: the grid of every channel; a click opens the unit page -----------------------
  async function showLayerAtlas(job, body, datasetId) {
    const entries = await api.artifactJson(job.id, "atlas.json");
    const size = job.params.size;
    const columns = Math.ceil(Math.sqrt(entries.length));
    const img = h("img", { src: await api.artifact(job.id, "atlas.png"), class: "picture atlas-grid", id: "layer-atlas-grid",
      alt: `feature visualizations of ${entries.length} channels of ${job.params.layer}; click one for its unit page` });
    img.addEventListener("click", (e) => {
      const r = img.getBoundingClientRect();
      const scale = img.naturalWidth / r.width;
      const col = Math.floor(((e.clientX - r.left) * scale - 2) / (size + 2));
      const row = Math.floor(((e.clientY - r.top) * scale - 2) / (size + 2));
      const entry = entries[row * columns + col];
      if (entry && col < columns) openUnit(job, entry, datasetId);
    });
    const list = h("select", { id: "unit-select", "aria-label": "open a channel's unit page" },
      entries.map((e) => h("option", { value: e.channel }, `channel ${e.channel}`)));
    list.addEventListener("change", () => openUnit(job, entries.find((e) => e.channel === Number(list.value)), datasetId));
    clear(page, h("h3", {}, `${job.params.layer}: ${entries.length} channels`),
      h("p", { class: "notice" }, "Each channel's feature visualization. Click one (or choose it) for its unit page."),
      field("channel", list), img);
    body.append(h("p", { class: "notice" }, "The layer page is below."));
    if (entries.length) openUnit(job, entries[0], datasetId);
  }

  async function openUnit(job, entry, datasetId) {
    const c = entry.channel;
    const pictures = await Promise.all(entry.images.map((name) => api.artifact(job.id, name)));
    const hasTop = job.result.artifacts.some((a) => a.name === `top_${c}.png`);
    const top = entry.top[0];
    const deconv = h("button", { type: "button", class: "secondary", id: "unit-deconvnet", disabled: !(top && datasetId),
      title: top && datasetId ? `projects ${top.name} at [${top.position}]` : "build the atlas with a dataset for top patches" },
    top && datasetId ? `Deconvnet projection of the top patch (${top.name})` : "Deconvnet projection of the top patch");
    const dream = h("button", { type: "button", class: "secondary", id: "unit-deepdream" }, "DeepDream of this channel on the current image");
    const results = h("div", { class: "jobs-grid", id: "unit-jobs" });
    deconv.addEventListener("click", () => unitJob("deconvnet", entry, job, results, datasetId));
    dream.addEventListener("click", () => unitJob("deepdream", entry, job, results, datasetId));
    const stats = entry.stats;
    clear(unit,
      h("h3", {}, `${job.params.layer} · channel ${c}`),
      h("div", { class: "row" },
        h("div", {}, h("div", { class: "variants" }, pictures.map((src, i) => h("figure", {},
          h("img", { src, class: "picture unit-image", alt: `channel ${c}, ${i ? `variant ${i}` : "feature visualization"}` }),
          h("figcaption", { class: "notice" }, `${i ? `variant ${i}` : "feature visualization"} · ${fmt(entry.objectives[i], 3)}`)))),
        stats ? h("dl", { class: "metrics", id: "unit-stats" },
          h("dt", {}, "mean"), h("dd", {}, fmt(stats.mean, 4)), h("dt", {}, "max"), h("dd", {}, fmt(stats.max, 4)),
          h("dt", {}, "sparsity"), h("dd", {}, fmt(stats.sparsity, 3)), h("dt", {}, "never fires on"),
          h("dd", {}, `${fmt(100 * stats.fraction_zero, 1)} % of images`), h("dt", {}, "dead"), h("dd", {}, stats.dead ? "yes" : "no"))
          : h("p", { class: "notice" }, "Build the atlas with a dataset for statistics and top patches.")),
        hasTop ? h("div", {}, h("h4", {}, "Top dataset patches"),
          h("img", { src: await api.artifact(job.id, `top_${c}.png`), class: "picture", id: "unit-top", alt: `top patches of channel ${c}` }),
          table([{ label: "", value: (t) => datasetThumb(datasetId, t.image_index, t.name, 48) },
            { label: "image", value: (t) => t.name }, { label: "activation", value: (t) => fmt(t.activation, 3) },
            { label: "box", value: (t) => t.box.join(", ") }], entry.top)) : null),
      h("div", { class: "actions" }, deconv, dream), results, unitCircuit(job.params.layer, c));
    unit.scrollIntoView({ block: "nearest" });
  }

  // Deconvnet explains the top patch: its own dataset image (`{"dataset", "index"}`, served by the API whichever
  // page uploaded it) at the patch's position on the layer's grid, and its card says which image that is.
  // DeepDream works on the current image.
  async function unitJob(kind, entry, job, results, datasetId) {
    errors.show(null);
    const model = state.get("model");
    const top = entry.top[0];
    const params = { layer: job.params.layer, channel: entry.channel };
    let image;
    let title = `${kind} · channel ${entry.channel}`;
    if (kind === "deconvnet") {
      if (!top || !datasetId) return errors.show({ code: "no_top_patch", message: "build the atlas with a dataset: deconvnet projects the top patch's image" });
      image = { dataset: datasetId, index: top.image_index };
      params.position = top.position;
      title = `deconvnet · channel ${entry.channel} · ${top.name} at [${top.position.join(", ")}]`;
    } else {
      const current = state.get("image");
      if (!current) return errors.show({ code: "no_image", message: "choose an image in the Image panel first" });
      image = { id: current.id };
      Object.assign(params, { octaves: 2, steps: 8 });
    }
    showCard(results, jobCard(title, { kind, model: model.id, image, params }, {
      render: async (done, body) => {
        const name = kind === "deepdream" ? "image.png" : "heatmap.png";
        body.append(h("img", { src: await api.artifact(done.id, name), class: "picture", alt: `${kind} result` }));
        if (kind === "deconvnet") {
          body.append(h("figure", { class: "explained" }, datasetThumb(datasetId, top.image_index, top.name),
            h("figcaption", { class: "notice", id: "unit-deconvnet-image" },
              `explains ${top.name} (image ${top.image_index} of the dataset), unit at [${top.position.join(", ")}] (row, column)`)));
        }
      } }));
  }

  // --- the activation atlas: zoom and hover ------------------------------------------------------------
  async function showActivationAtlas(job, body) {
    const cells = await api.artifactJson(job.id, "cells.json");
    const { grid, size } = job.params;
    const byCell = new Map(cells.map((c) => [`${c.x},${c.y}`, c]));
    const img = h("img", { src: await api.artifact(job.id, "atlas.png"), class: "zoomable", id: "activation-atlas",
      alt: `activation atlas of ${job.params.layer}` });
    const zoom = h("input", { type: "range", min: 1, max: 4, step: 0.25, value: 1, id: "atlas-zoom" });
    const viewport = h("div", { class: "zoom-viewport" }, img);
    const tip = h("div", { class: "tooltip", hidden: true, id: "atlas-tip" });
    const setZoom = () => (img.style.width = `${Number(zoom.value) * 100}%`);
    zoom.addEventListener("input", setZoom);
    setZoom();
    img.addEventListener("mousemove", (e) => {
      const r = img.getBoundingClientRect();
      const scale = img.naturalWidth / r.width;
      const x = Math.floor(((e.clientX - r.left) * scale - 1) / (size + 1));
      const y = Math.floor(((e.clientY - r.top) * scale - 1) / (size + 1));
      const cell = byCell.get(`${x},${y}`);
      tip.hidden = !cell;
      if (!cell) return;
      clear(tip, `cell (${x}, ${y}): ${cell.count} activations · ${cell.top_label ?? `class ${cell.top_class}`}`);
      const box = viewport.getBoundingClientRect();
      tip.style.left = `${e.clientX - box.left + 14}px`;
      tip.style.top = `${e.clientY - box.top + 14}px`;
    });
    img.addEventListener("mouseleave", () => (tip.hidden = true));
    clear(page, h("h3", {}, `Activation atlas of ${job.params.layer}: ${cells.length} of ${grid * grid} cells`),
      field("zoom", zoom), h("div", { class: "plot" }, viewport, tip));
    clear(unit);
    body.append(h("p", { class: "notice" }, "The atlas is below: hover a cell for its count and class."));
  }

  root.append(
    h("h2", {}, "Atlases"),
    h("p", { class: "intro" }, "Microscope-style pages for your own model: every unit of a layer at a glance, each unit's " +
      "variants, top patches and statistics; and activation atlases (Carter et al. 2019)."),
    h("div", { class: "card" }, field("dataset", dataset),
      h("div", { class: "row" },
        h("div", { class: "grow" }, h("h3", {}, "Layer atlas"), layerForm, h("div", { class: "actions" }, buildLayer)),
        h("div", { class: "grow" }, h("h3", {}, "Activation atlas"), activationForm, h("div", { class: "actions" }, buildActivation))),
      listErrors, errors),
    jobs, h("div", { class: "card" }, page), h("div", { class: "card" }, unit));
  state.on("schema", renderForms);
  state.on("layer", renderForms);
  state.on("models", refreshDatasets);
  state.on("datasets-changed", refreshDatasets);
  mount.shown = refreshDatasets;
}

export const shown = () => mount.shown && mount.shown();
