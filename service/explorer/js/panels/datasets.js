// 7. Datasets: upload a zip (or many images), then the dataset views as jobs: a channel's top activations with
// their patches, the embedding map (hover a point to see its image), the current image's neighbours, and
// unit statistics. Every dataset image shown comes from the API (`GET /v1/datasets/{id}/images/{index}`), so it
// does not matter which page or client uploaded the dataset.
import { api } from "../api.js";
import { state, showPanel } from "../state.js";
import { h, clear, field, errorBox, busy, paramsForm, table, fmt, when } from "../ui.js";
import { jobCard, showCard, specOf } from "../job_card.js";

// The dataset kinds this panel shows (the Jobs panel's "open" hands it a finished one).
export const DATASET_VIEWS = ["top_activations", "embedding", "neighbors", "unit_stats"];

const THUMB = 96; // pixels: the longest side of the thumbnails shown in tables and tooltips
const thumbs = new Map(); // "id/index/size" → Promise of an object URL, fetched once (a dataset never changes)

// A dataset image as an object URL (`size`: a thumbnail's longest side in pixels; omitted: the image itself).
export function datasetImage(id, index, size) {
  const key = `${id}/${index}/${size ?? ""}`;
  if (!thumbs.has(key)) {
    thumbs.set(key, api.datasetImage(id, index, size).catch((error) => {
      thumbs.delete(key); // asked again next time
      throw error;
    }));
  }
  return thumbs.get(key);
}

// An <img> of a dataset image that fills in when it arrives (alt: its name).
export function datasetThumb(id, index, name, size = THUMB) {
  const img = h("img", { class: "thumb", alt: name || `image ${index}`, "data-index": index, width: size });
  datasetImage(id, index, size).then((url) => (img.src = url)).catch(() => img.replaceWith(h("span", { class: "notice" }, "(gone)")));
  return img;
}

// "holiday.zip · 5 images · 6 Dec 2026, 14:02" (upload time; a dataset stored before names: its id's start).
export const datasetLabel = (d) => `${d.name || `dataset ${d.id.slice(0, 8)}`} · ${d.count} image${d.count === 1 ? "" : "s"} · ` +
  `${when(d.created_at)}`;

export function mount(root) {
  const errors = errorBox();
  const archive = h("input", { type: "file", id: "dataset-file", accept: ".zip,.tar,.tgz,.gz,image/*", multiple: true });
  const upload = h("button", { type: "button", id: "dataset-upload" }, "Upload");
  const uploaded = h("div", { id: "dataset-uploaded", "aria-live": "polite" });
  const chooser = h("select", { id: "dataset-select" });
  const remove = h("button", { type: "button", class: "danger", id: "dataset-delete" }, "Delete");
  const about = h("p", { class: "notice", id: "dataset-about" });
  const actions = h("div", { id: "dataset-actions", class: "jobs-grid" });
  const results = h("div", { class: "jobs-grid", id: "dataset-results" });
  const forms = {};

  upload.addEventListener("click", () => busy(upload, errors, async () => {
    const files = [...archive.files];
    if (!files.length) throw { code: "no_file", message: "choose a .zip or .tar(.gz), or some images" };
    const form = new FormData();
    const single = files.length === 1 && /\.(zip|tar|tgz|gz)$/i.test(files[0].name);
    if (single) form.append("file", files[0]);
    else files.forEach((f) => form.append("files", f));
    const created = await api.uploadDataset(form);
    clear(uploaded, h("p", {}, `Dataset “${created.name}”: ${created.count} images kept.`),
      created.rejected.length ? table([{ label: "rejected", value: (r) => r.name }, { label: "why", value: (r) => r.reason }],
        created.rejected) : null);
    await refresh(created.id);
    state.set("datasets-changed", created.id);
  }));

  remove.addEventListener("click", () => busy(remove, errors, async () => {
    const chosen = chooser.selectedOptions[0]?.textContent || chooser.value;
    if (!chooser.value || !confirm(`Delete dataset ${chosen}?`)) return;
    await api.deleteDataset(chooser.value);
    await refresh();
    state.set("datasets-changed", null);
  }));

  async function refresh(preferred) {
    await busy(null, errors, async () => {
      const { datasets } = await api.datasets();
      const want = preferred || chooser.value;
      clear(chooser, datasets.length ? datasets.map((d) => h("option", { value: d.id, selected: d.id === want, title: d.id }, datasetLabel(d))) :
        h("option", { value: "" }, "no datasets yet"));
      await describe();
    });
  }

  async function describe() {
    if (!chooser.value) return clear(about, "Upload a dataset to start.");
    const info = await api.dataset(chooser.value);
    clear(about, h("span", {}, `${info.name || "(no name)"}: uploaded ${when(info.created_at)}, kept until ${when(info.expires_at)}. `),
      h("span", {}, `${info.count} images: ${info.images.slice(0, 8).map((i) => i.name).join(", ")}${info.count > 8 ? ", …" : ""}`),
      h("br"), h("small", {}, "id ", h("code", {}, info.id)));
    return info;
  }
  chooser.addEventListener("change", () => busy(null, errors, describe));

  function renderActions() {
    const layer = state.get("layer") || undefined;
    const channel = state.get("channel") ?? undefined;
    const make = (kind, title, render, needsImage = false) => {
      const schema = state.kindParams(kind);
      if (!schema) return null;
      forms[kind] = paramsForm(schema, { values: { ...(layer ? { layer } : {}), ...(kind === "top_activations" && channel !== undefined ? { channel } : {}) } });
      const go = h("button", { type: "button", id: `ds-${kind}` }, title);
      go.addEventListener("click", () => {
        errors.show(null);
        const model = state.get("model");
        const image = state.get("image");
        if (!chooser.value) return errors.show({ code: "no_dataset", message: "upload or choose a dataset first" });
        if (needsImage && !image) return errors.show({ code: "no_image", message: "choose an image in the Image panel first" });
        const spec = { kind, model: model.id, dataset: chooser.value, params: forms[kind].read(), ...(needsImage ? { image: { id: image.id } } : {}) };
        const dataset = chooser.value;
        showCard(results, jobCard(kind, spec, { render: (job, body) => render(job, body, dataset),
          className: kind === "unit_stats" ? "wide" : "" }));
      });
      return h("div", { class: "card" }, h("h3", {}, title), h("p", { class: "notice" }, state.kindSummary(kind)), forms[kind],
        h("div", { class: "actions" }, go));
    };
    clear(actions,
      make("top_activations", "Top activations", renderTop),
      make("embedding", "Embedding map", renderEmbedding),
      make("neighbors", "Neighbours of the current image", renderNeighbours, true),
      make("unit_stats", "Unit statistics", renderUnits));
  }

  async function renderTop(job, body, dataset) {
    const top = await api.artifactJson(job.id, "top.json");
    body.append(h("img", { src: await api.artifact(job.id, "patches.png"), class: "picture", alt: "top patches" }),
      table([
        { label: "", value: (t) => datasetThumb(dataset, t.image_index, t.name, 48) },
        { label: "image", value: (t) => t.name },
        { label: "channel", value: (t) => t.channel ?? job.params.channel ?? "" },
        { label: "activation", value: (t) => fmt(t.activation, 3) },
        { label: "box (image px)", value: (t) => t.box.join(", ") },
      ], top.slice(0, 24)));
  }

  async function renderEmbedding(job, body, dataset) {
    const points = await api.artifactJson(job.id, "points.json");
    const info = await api.dataset(dataset);
    const names = new Map(info.images.map((i) => [i.index, i.name]));
    const side = 360;
    const canvas = h("canvas", { width: side, height: side, id: "embedding-plot", "aria-label": "embedding scatter plot" });
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#2b59c3";
    for (const p of points) {
      ctx.beginPath();
      ctx.arc(8 + p.x * (side - 16), 8 + p.y * (side - 16), 4, 0, 2 * Math.PI);
      ctx.fill();
    }
    const tip = h("div", { class: "tooltip", hidden: true, id: "embedding-tip" });
    canvas.addEventListener("mousemove", (e) => {
      const r = canvas.getBoundingClientRect();
      const x = ((e.clientX - r.left) / r.width) * side;
      const y = ((e.clientY - r.top) / r.height) * side;
      let best = null;
      let dist = 12;
      for (const p of points) {
        const d = Math.hypot(8 + p.x * (side - 16) - x, 8 + p.y * (side - 16) - y);
        if (d < dist) [best, dist] = [p, d];
      }
      tip.hidden = !best;
      if (!best) return;
      const name = names.get(best.image_index) || `#${best.image_index}`;
      if (tip.dataset.index !== String(best.image_index)) {
        tip.dataset.index = best.image_index;
        clear(tip, `${best.image_index}: ${name}`, datasetThumb(info.id, best.image_index, name));
      }
      tip.style.left = `${e.clientX - r.left + 12}px`;
      tip.style.top = `${e.clientY - r.top + 12}px`;
    });
    canvas.addEventListener("mouseleave", () => (tip.hidden = true));
    body.append(h("div", { class: "row" }, h("div", { class: "plot" }, canvas, tip),
      h("img", { src: await api.artifact(job.id, "map.png"), class: "picture", alt: "thumbnails placed on the map", width: side })));
  }

  async function renderNeighbours(job, body, dataset) {
    const neighbours = await api.artifactJson(job.id, "neighbors.json");
    body.append(h("img", { src: await api.artifact(job.id, "neighbors.png"), class: "picture", alt: "nearest images" }),
      table([{ label: "", value: (n) => datasetThumb(dataset, n.image_index, n.name, 48) }, { label: "image", value: (n) => n.name },
        { label: "distance", value: (n) => fmt(n.distance, 4) }], neighbours));
  }

  async function renderUnits(job, body) {
    const units = await api.artifactJson(job.id, "units.json");
    const dead = units.filter((u) => u.dead).map((u) => u.channel);
    body.append(h("img", { src: await api.artifact(job.id, "units.png"), class: "picture", alt: "unit statistics chart" }),
      h("p", {}, `${units.length} channels; ${dead.length} dead${dead.length ? `: ${dead.slice(0, 30).join(", ")}${dead.length > 30 ? ", …" : ""}` : ""}`));
  }

  root.append(
    h("h2", {}, "Datasets"),
    h("p", { class: "intro" }, "A set of images to study a model with: what excites a unit most, how the images lie in a " +
      "layer's feature space, which are nearest to the current image."),
    h("div", { class: "row" },
      h("div", { class: "card grow" }, h("h3", {}, "Upload"), field("a .zip or .tar(.gz), or several images", archive),
        h("div", { class: "actions" }, upload), uploaded),
      h("div", { class: "card grow" }, h("h3", {}, "Your datasets"), h("div", { class: "actions" }, field("dataset", chooser), remove), about)),
    errors, actions, h("h3", {}, "Results"), results);
  const renders = { top_activations: renderTop, embedding: renderEmbedding, neighbors: renderNeighbours, unit_stats: renderUnits };
  state.on("open-job", (job) => {
    const dataset = job.inputs?.dataset;
    if (!renders[job.kind] || !dataset) return;
    showPanel("datasets");
    showCard(results, jobCard(job.kind, specOf(job), { existing: job, render: (done, body) => renders[job.kind](done, body, dataset),
      className: job.kind === "unit_stats" ? "wide" : "" }));
  });
  state.on("schema", renderActions);
  state.on("layer", renderActions);
  state.on("channel", renderActions);
  state.on("models", () => refresh());
}
