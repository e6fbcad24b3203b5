// 6. Images made by gradient ascent: class model, feature visualization, inversion, DeepDream, adversarial,
// texture, style transfer: the API's image-making kinds, read from its OpenAPI schema (`state.kindsOf`), as are their
// parameters with the API's defaults and the images each reads. Previews arrive live from the job's events; a
// running job can be cancelled; the final image comes with its metrics.
import { api } from "../api.js";
import { state } from "../state.js";
import { h, clear, field, errorBox, paramsForm } from "../ui.js";
import { jobCard, showCard } from "../job_card.js";

const SAMPLES = ["chelsea", "coffee", "astronaut", "rocket"];

export function mount(root) {
  const errors = errorBox();
  const kind = h("select", { id: "make-kind" });
  const summary = h("p", { class: "notice", id: "make-summary" });
  const formHolder = h("div", { id: "make-params" });
  const style = h("select", { id: "make-style" }, SAMPLES.map((s) => h("option", { value: s, selected: s === "coffee" }, s)));
  const styleField = field("style image (a sample photo)", style);
  const run = h("button", { type: "button", id: "make-run" }, "Make the image");
  const results = h("div", { class: "jobs-grid", id: "make-results" });
  let form = null;

  function renderForm(values = {}) {
    const k = kind.value;
    const schema = state.kindParams(k);
    if (!schema) return clear(formHolder);
    form = paramsForm(schema, { values, main: ["target", "layer", "channel", "position", "steps", "size", "epsilon", "method",
      "octaves", "content_layer", "style_layers", "style_weight", "preview_every", "seed"] });
    summary.textContent = state.kindSummary(k);
    styleField.hidden = !state.reads(k, "style_image");
    clear(formHolder, form);
  }

  function renderKinds() {
    const available = state.kindsOf("making");
    clear(kind, available.map((k) => h("option", { value: k }, k)));
    renderForm(defaultsFor(kind.value));
  }

  // Sensible starting values from what is in view: the selected layer and channel, the top class.
  function defaultsFor(k) {
    const layer = state.get("layer");
    const channel = state.get("channel");
    if (k === "feature_vis" && layer && channel !== null) return { layer, channel };
    if ((k === "deepdream" || k === "inversion") && layer) return { layer };
    const top = state.get("predictions")?.[0];
    if (k === "class_model" && top) return { target: top.label ?? top.index };
    return {};
  }

  async function styleImageId() {
    const blob = await (await fetch(`samples/${style.value}.jpg`)).blob();
    const stored = await api.uploadImage(new File([blob], `${style.value}.jpg`, { type: "image/jpeg" }));
    return stored.id;
  }

  run.addEventListener("click", async () => {
    errors.show(null);
    try {
      const model = state.get("model");
      const image = state.get("image");
      const k = kind.value;
      if (!model) throw { code: "no_model", message: "choose a model first" };
      const spec = { kind: k, model: model.id, params: form.read() };
      if (state.reads(k, "image")) {
        if (!image) throw { code: "no_image", message: `${k} starts from an image: choose one in the Image panel first` };
        spec.image = { id: image.id };
      }
      if (state.reads(k, "style_image")) spec.style_image = { id: await styleImageId() };
      const card = jobCard(k, spec, { render: async (job, body) => {
        body.append(h("img", { src: await api.artifact(job.id, "image.png"), class: "picture made", alt: `${k} result` }));
        if (job.result.artifacts.some((a) => a.name === "perturbation.png")) {
          body.append(h("img", { src: await api.artifact(job.id, "perturbation.png"), class: "picture", alt: "the perturbation, amplified" }));
        }
      } });
      showCard(results, card);
    } catch (error) {
      errors.show(error);
    }
  });

  kind.addEventListener("change", () => renderForm(defaultsFor(kind.value)));
  root.append(
    h("h2", {}, "Make images"),
    h("p", { class: "intro" }, "Images optimised by gradient ascent on a worker (one forward and one backward pass a step). " +
      "Previews arrive while it runs; Cancel stops it at its next step."),
    h("div", { class: "card" }, field("kind", kind), summary, formHolder, styleField, h("div", { class: "actions" }, run), errors),
    results);
  state.on("schema", renderKinds);
  state.on("make-request", ({ kind: k, params }) => {
    kind.value = k;
    renderForm(params);
  });
  state.on("channel", () => kind.value === "feature_vis" && renderForm(defaultsFor("feature_vis")));
}
