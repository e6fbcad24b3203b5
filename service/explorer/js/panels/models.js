// 1. Models: the list, one model's details, upload (ONNX + labels + preprocessing) and delete.
import { api } from "../api.js";
import { state } from "../state.js";
import { h, clear, field, errorBox, busy, table, when } from "../ui.js";

const PREPROCESS_EXAMPLE = '{"mean":[0.485,0.456,0.406],"std":[0.229,0.224,0.225],"resize":256,"crop":true}';

export function mount(root) {
  const list = h("div", { class: "scroll reflow", id: "models-list" });
  const details = h("div", { id: "model-details" });
  const listErrors = errorBox();

  const file = h("input", { type: "file", name: "file", accept: ".onnx", required: true });
  const name = h("input", { type: "text", name: "name", placeholder: "optional" });
  const labels = h("input", { type: "file", name: "labels", accept: ".txt,text/plain" });
  const preprocess = h("textarea", { name: "preprocess", placeholder: PREPROCESS_EXAMPLE });
  const upload = h("button", { type: "submit", id: "model-upload" }, "Upload and validate");
  const uploadErrors = errorBox();
  const uploaded = h("p", { class: "notice", "aria-live": "polite" });
  const form = h("form", { class: "card", id: "model-upload-form" },
    h("h3", {}, "Upload an ONNX model"),
    h("p", { class: "notice" }, "The file is checked before it is kept: well-formed, runnable and differentiable, and its " +
      "torch twin must agree with ONNX Runtime. A refusal says why."),
    h("div", { class: "params" }, field("ONNX file", file), field("Name", name), field("Labels (one a line)", labels)),
    field("Preprocessing (JSON)", preprocess, "mean, std, scale, color (RGB|BGR), resize, crop; empty for ImageNet defaults"),
    h("div", { class: "actions" }, upload, uploaded), uploadErrors);

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(upload, uploadErrors, async () => {
      if (!file.files.length) throw { code: "no_file", message: "choose an .onnx file first" };
      const body = new FormData();
      body.append("file", file.files[0]);
      if (name.value.trim()) body.append("name", name.value.trim());
      if (labels.files.length) body.append("labels", labels.files[0]);
      if (preprocess.value.trim()) body.append("preprocess", preprocess.value.trim());
      uploaded.textContent = "validating… (a large model takes a while)";
      try {
        const model = await api.uploadModel(body);
        uploaded.textContent = `kept as ${model.id}`;
        form.reset();
        state.set("reload-models", model.id);
      } catch (error) {
        uploaded.textContent = "";
        throw error;
      }
    });
  });

  async function refresh() {
    await busy(null, listErrors, async () => {
      const { models } = await api.models();
      const current = state.get("model")?.id;
      const rows = table([
        { label: "Name", value: (m) => [m.name, h("br"), h("code", {}, m.id)] },
        { label: "Uploaded", value: (m) => m.source === "upload" ? h("time", { datetime: m.uploaded_at }, when(m.uploaded_at)) : "built in" },
        { label: "Input", value: (m) => `${m.input.channels}×${m.input.height}×${m.input.width}${m.input.dynamic_size ? " (any size)" : ""}` },
        { label: "Classes", value: (m) => m.num_classes ?? "none (backbone)" },
        { label: "", value: (m) => m.source === "upload" ? deleteButton(m) : "" },
      ], models);
      rows.querySelectorAll("tbody tr").forEach((tr, i) => {
        const m = models[i];
        tr.tabIndex = 0;
        tr.dataset.model = m.id;
        if (m.id === current) tr.classList.add("selected");
        const choose = () => state.set("reload-models", m.id);
        tr.addEventListener("click", (e) => e.target.tagName !== "BUTTON" && choose());
        tr.addEventListener("keydown", (e) => e.key === "Enter" && e.target === tr && choose());
      });
      clear(list, rows);
    });
  }

  function deleteButton(model) {
    const button = h("button", { type: "button", class: "danger", "aria-label": `delete ${model.name}` }, "Delete");
    button.addEventListener("click", () => busy(button, listErrors, async () => {
      if (!confirm(`Delete the model ${model.name} (${model.id})?`)) return;
      await api.deleteModel(model.id);
      state.set("reload-models");
    }));
    return button;
  }

  function showDetails(model) {
    if (!model) return clear(details);
    const pre = model.preprocess;
    const spatial = model.layers.filter((l) => l.receptive_field);
    clear(details,
      h("h3", {}, model.name, " ", h("code", {}, model.id)),
      h("dl", { class: "metrics" },
        h("dt", {}, "input"), h("dd", {}, `${model.input.channels}×${model.input.height}×${model.input.width}` +
          (model.input.dynamic_size ? ", any size" : ", fixed size")),
        h("dt", {}, "preprocessing"), h("dd", {}, `mean ${JSON.stringify(pre.mean)}, std ${JSON.stringify(pre.std)}, ` +
          `scale ${pre.scale}, ${pre.color}, resize ${pre.resize ?? "none"}, crop ${JSON.stringify(pre.crop)}`),
        h("dt", {}, "classes"), h("dd", {}, model.num_classes === null ? "no class scores (a backbone)" :
          `${model.num_classes}${model.labels ? `: ${model.labels.slice(0, 6).join(", ")}${model.labels.length > 6 ? ", …" : ""}` : " (no labels)"}`),
        h("dt", {}, "layers"), h("dd", {}, `${model.layers.length} (${spatial.length} spatial, with receptive fields)`)));
  }

  root.append(
    h("h2", {}, "Models"),
    h("p", { class: "intro" }, "The built-in model and the ones uploaded with your key. Choose one to explore (also in the header)."),
    h("div", { class: "row" }, h("div", { class: "card grow" }, list, listErrors), h("div", { class: "card grow" }, details)),
    form);
  state.on("models", refresh);
  state.on("model", (m) => {
    showDetails(m);
    list.querySelectorAll("tr[data-model]").forEach((tr) => tr.classList.toggle("selected", tr.dataset.model === m?.id));
  });
}
