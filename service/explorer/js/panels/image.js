// 2. Image: drop, pick or choose a sample photo; it is uploaded (POST /v1/images) and becomes the current
// image for every panel; the model's top-k predictions are shown as bars.
import { api } from "../api.js";
import { state } from "../state.js";
import { h, clear, field, errorBox, busy } from "../ui.js";
import { imageFrom, inputCanvas } from "../viz.js";

const SAMPLES = [
  ["chelsea", "a tabby cat"],
  ["coffee", "a cup of coffee"],
  ["astronaut", "an astronaut"],
  ["rocket", "a rocket launch"],
];

export function mount(root) {
  const errors = errorBox();
  const picker = h("input", { type: "file", accept: "image/*", id: "image-file" });
  const drop = h("div", { class: "drop", id: "image-drop" }, "Drop an image here, or ", field("pick a file", picker));
  const samples = h("div", { class: "samples", role: "group", "aria-label": "sample photos" },
    SAMPLES.map(([name, alt]) => {
      const button = h("button", { type: "button", "data-sample": name, "aria-label": `use the sample photo: ${alt}` },
        h("img", { src: `samples/${name}.jpg`, alt }), h("span", {}, name));
      button.addEventListener("click", () => busy(button, errors, async () => {
        const blob = await (await fetch(`samples/${name}.jpg`)).blob();
        await use(new File([blob], `${name}.jpg`, { type: "image/jpeg" }));
      }));
      return button;
    }));
  const views = h("div", { class: "row", id: "image-views" });
  const topK = h("input", { type: "number", min: 1, max: 20, value: 5, id: "top-k" });
  const predictButton = h("button", { type: "button", id: "predict" }, "Predict");
  const bars = h("div", { class: "bars", id: "predictions", "aria-live": "polite" });

  async function use(file) {
    const stored = await api.uploadImage(file);
    const url = URL.createObjectURL(file);
    const element = await imageFrom(url, file.name);
    state.set("image", { ...stored, name: file.name, url, element });
  }

  picker.addEventListener("change", () => picker.files.length && busy(null, errors, () => use(picker.files[0])));
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = e.dataTransfer.files[0];
    if (file) busy(null, errors, () => use(file));
  });

  async function predict() {
    const model = state.get("model");
    const image = state.get("image");
    if (!model || !image) return;
    if (model.num_classes === null) {
      clear(bars, h("p", { class: "notice" }, "This model has no class scores (a backbone): nothing to predict."));
      return;
    }
    await busy(predictButton, errors, async () => {
      const { predictions } = await api.predict(model.id, { image: { id: image.id }, top_k: Number(topK.value) || 5 });
      clear(bars, predictions.map((p) => h("div", { class: "bar", "data-index": p.index },
        h("span", { class: "label" }, p.label ?? `class ${p.index}`),
        h("span", { class: "track", role: "meter", "aria-valuemin": 0, "aria-valuemax": 1, "aria-valuenow": p.probability.toFixed(4),
          "aria-label": p.label ?? `class ${p.index}` }, barFill(p.probability)),
        h("span", { class: "value" }, `${(100 * p.probability).toFixed(1)} %`))));
      state.set("predictions", predictions);
    });
  }
  predictButton.addEventListener("click", predict);

  function showImage() {
    const image = state.get("image");
    const model = state.get("model");
    if (!image) return clear(views, h("p", { class: "notice" }, "No image yet."));
    const original = h("figure", {}, h("img", { src: image.url, alt: image.name, class: "picture", id: "image-original",
      width: Math.min(image.width, 420) }), h("figcaption", { class: "notice" }, `${image.name}: ${image.width}×${image.height} ${image.format}`));
    const seen = model ? h("figure", {}, h("div", { class: "stack" }, inputCanvas(image.element, model)),
      h("figcaption", { class: "notice" }, `as ${model.name} sees it: ${model.input.width}×${model.input.height} after resize and crop`)) : null;
    clear(views, original, seen);
  }

  root.append(
    h("h2", {}, "Image"),
    h("p", { class: "intro" }, "The image every panel works on. It is uploaded once and referred to by its id."),
    h("div", { class: "card" }, drop, h("p", { class: "notice" }, "or one of the bundled sample photos:"), samples, errors),
    h("div", { class: "card" }, views),
    h("div", { class: "card" }, h("h3", {}, "Predictions"),
      h("div", { class: "actions" }, field("top k", topK), predictButton), bars));
  state.on("image", () => {
    showImage();
    predict();
  });
  state.on("model", () => {
    showImage();
    clear(bars);
    predict();
  });
}

function barFill(probability) {
  const fill = h("span", { class: "fill" });
  fill.style.display = "block";
  fill.style.width = `${Math.max(0.5, 100 * probability)}%`;
  return fill;
}
