// 5. Attributions: run several attribution kinds on the current image and target, side by side, each with
// live progress; one slider (and one per map) blends the heatmaps over the image. Where the API offers
// `compare`, the maps can also be ranked by their deletion and insertion scores.
import { api } from "../api.js";
import { state } from "../state.js";
import { h, clear, field, errorBox, paramsForm, table, fmt } from "../ui.js";
import { attributionMap, blend, inputCanvas, mapCanvas } from "../viz.js";
import { jobCard } from "../job_card.js";
import { targetPicker } from "./target.js";

const ATTRIBUTION_KINDS = ["saliency", "guided_backprop", "deconvnet", "gradcam", "smoothgrad", "integrated_gradients",
  "rise", "kernel_shap"];
const CHOSEN = new Set(["saliency", "gradcam", "integrated_gradients"]);

export function mount(root) {
  const errors = errorBox();
  const target = targetPicker("attr-target");
  const choices = h("fieldset", { class: "kinds", id: "attr-kinds" }, h("legend", {}, "Methods"));
  const forms = {};
  const run = h("button", { type: "button", id: "attr-run" }, "Run selected");
  const compare = h("button", { type: "button", class: "secondary", id: "attr-compare", hidden: true }, "Compare and rank");
  const opacity = h("input", { type: "range", min: 0, max: 1, step: 0.05, value: 0.6, id: "attr-opacity" });
  const results = h("div", { class: "jobs-grid", id: "attr-results" });

  opacity.addEventListener("input", () => results.querySelectorAll(".blend input[type=range]").forEach((s) => {
    s.value = opacity.value;
    s.dispatchEvent(new Event("input"));
  }));

  function renderChoices() {
    const kinds = ATTRIBUTION_KINDS.filter((k) => state.kindParams(k));
    clear(choices, h("legend", {}, "Methods"), kinds.map((kind) => {
      const box = h("input", { type: "checkbox", name: "kind", value: kind, checked: CHOSEN.has(kind), id: `attr-kind-${kind}` });
      box.addEventListener("change", () => (box.checked ? CHOSEN.add(kind) : CHOSEN.delete(kind)));
      forms[kind] = paramsForm(state.kindParams(kind), { fixed: ["target"] });
      return h("div", { class: "kind" }, h("label", { for: box.id, title: state.kindSummary(kind) }, box, ` ${kind}`),
        h("details", {}, h("summary", {}, "parameters"), forms[kind]));
    }));
    compare.hidden = !state.kindParams("compare");
  }

  function spec(kind, params) {
    const model = state.get("model");
    const image = state.get("image");
    if (!model || !image) throw { code: "no_image", message: "choose an image in the Image panel first" };
    const t = target.value();
    return { kind, model: model.id, image: { id: image.id }, params: { ...params, ...(t !== null ? { target: t } : {}) } };
  }

  run.addEventListener("click", () => {
    errors.show(null);
    try {
      const specs = [...CHOSEN].filter((k) => forms[k]).map((kind) => spec(kind, forms[kind].read()));
      if (!specs.length) throw { code: "no_method", message: "tick at least one method" };
      clear(results);
      for (const s of specs) results.append(attributionCard(s));
    } catch (error) {
      errors.show(error);
    }
  });

  compare.addEventListener("click", () => {
    errors.show(null);
    try {
      const s = spec("compare", { methods: [...CHOSEN] });
      clear(results, jobCard("compare: ranked by deletion and insertion", s, { className: "wide", render: async (job, body) => {
        const ranking = await api.artifactJson(job.id, "ranking.json");
        body.append(h("img", { src: await api.artifact(job.id, "panel.png"), class: "picture", alt: "maps side by side, ranked" }),
          table([
            { label: "method", value: (r) => r.method },
            { label: "deletion AUC (lower is better)", value: (r) => fmt(r.deletion_auc, 4) },
            { label: "insertion AUC (higher is better)", value: (r) => fmt(r.insertion_auc, 4) },
            { label: "seconds", value: (r) => fmt(r.seconds, 2) },
          ], ranking));
      } }));
    } catch (error) {
      errors.show(error);
    }
  });

  function attributionCard(s) {
    const model = state.get("model");
    const image = state.get("image");
    return jobCard(s.kind, s, { render: async (job, body) => {
      const map = attributionMap(await api.artifactNpy(job.id, "attribution.npy"));
      const heat = mapCanvas(map.data, map.rows, map.cols, { map: "inferno", alpha: true, lo: 0, hi: 1 });
      const view = blend(inputCanvas(image.element, model), heat, { label: `${s.kind} opacity`, opacity: Number(opacity.value) });
      const m = job.result.metrics || {};
      const cls = m.target ?? job.params.target;
      body.append(view, h("p", { class: "notice" }, `target: ${cls === null || cls === undefined ? "top-1" : `${m.target_label ?? state.label(cls)} (${cls})`}`));
      if (m.deletion_auc !== undefined) {
        body.append(h("p", { class: "faithfulness", title: "Petsiuk et al. 2018: the target's probability as the most-attributed pixels are removed (deletion) or restored into a blurred copy (insertion)" },
          "faithfulness: deletion AUC ", h("strong", {}, fmt(m.deletion_auc, 3)), " (lower is better) · insertion AUC ",
          h("strong", {}, fmt(m.insertion_auc, 3)), " (higher is better)"));
      }
    } });
  }

  root.append(
    h("h2", {}, "Attributions"),
    h("p", { class: "intro" }, "Which pixels the model's score for a class depends on, by several methods at once. Each runs as a " +
      "job on a worker; the maps are |attribution| summed over colour channels, scaled to their 99.5th percentile."),
    h("div", { class: "card" }, choices, h("div", { class: "params" }, target.field, field("blend all maps", opacity)),
      h("div", { class: "actions" }, run, compare), errors),
    results);
  state.on("schema", renderChoices);
  state.on("image", () => clear(results));
  state.on("model", () => clear(results));
}
