// 4. Occlusion (Zeiler & Fergus): slide a patch over the image and watch the target's probability; the drop
// at each position is drawn where the patch was, over the image, with a slider for its opacity.
import { api } from "../api.js";
import { state } from "../state.js";
import { h, clear, field, errorBox, busy, fmt } from "../ui.js";
import { blend, colour, inputCanvas } from "../viz.js";
import { targetPicker } from "./target.js";

export function mount(root) {
  const errors = errorBox();
  const patch = h("input", { type: "number", min: 1, max: 512, value: 32, id: "occ-patch" });
  const stride = h("input", { type: "number", min: 1, max: 512, value: 16, id: "occ-stride" });
  const fill = h("select", { id: "occ-fill" }, ["mean", "zero", "blur", "grey 128"].map((f) => h("option", { value: f }, f)));
  const target = targetPicker("occ-target");
  const run = h("button", { type: "button", id: "occ-run" }, "Run occlusion");
  const result = h("div", { id: "occlusion-result" });

  run.addEventListener("click", () => busy(run, errors, async () => {
    const model = state.get("model");
    const image = state.get("image");
    if (!model || !image) throw { code: "no_image", message: "choose an image in the Image panel first" };
    const body = { image: { id: image.id }, patch: Number(patch.value), stride: Number(stride.value),
      fill: fill.value === "grey 128" ? 128 : fill.value, format: "json" };
    if (target.value() !== null) body.target = target.value();
    clear(result, h("p", { class: "notice", id: "occ-running" }, "occluding…"));
    result.scrollIntoView({ block: "nearest" });
    let answer;
    try {
      answer = await (await api.occlusion(model.id, body)).json();
    } catch (error) {
      clear(result); // refused: the error box above says why, and nothing says it is still running
      throw error;
    }
    show(model, image, answer, body);
    result.scrollIntoView({ block: "nearest" });
  }));

  function show(model, image, { target: cls, map, baseline_probability: baseline }, { patch: p, stride: s }) {
    const rows = map.length;
    const cols = map[0].length;
    const { width, height } = model.input;
    // Each patch position paints a stride-sized cell centred on the patch's centre with the probability drop.
    const heat = h("canvas", { width, height });
    const ctx = heat.getContext("2d");
    let most = 1e-6;
    for (const row of map) for (const v of row) most = Math.max(most, Math.abs(baseline - v));
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const drop = (baseline - map[r][c]) / most; // -1..1; positive: the patch hid evidence for the target
        const [R, G, B] = colour((drop + 1) / 2, "coolwarm");
        ctx.fillStyle = `rgb(${R},${G},${B})`;
        ctx.fillRect(c * s + p / 2 - s / 2, r * s + p / 2 - s / 2, s, s);
      }
    }
    let worst = [0, 0];
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) if (map[r][c] < map[worst[0]][worst[1]]) worst = [r, c];
    clear(result,
      h("p", {}, `Target: ${state.label(cls)} (class ${cls}); probability without occlusion ${fmt(baseline, 4)}; ` +
        `lowest ${fmt(map[worst[0]][worst[1]], 4)} with the patch at x ${worst[1] * s}, y ${worst[0] * s}. ` +
        "Red: hiding that region lowers the probability; blue: raises it."),
      blend(inputCanvas(image.element, model), heat, { label: "occlusion map opacity", opacity: 0.6 }),
      h("p", { class: "notice" }, `${rows}×${cols} positions of a ${p}px patch every ${s}px.`));
  }

  root.append(
    h("h2", {}, "Occlusion"),
    h("p", { class: "intro" }, "Occlusion sensitivity (Zeiler & Fergus 2014), run in the request on ONNX Runtime in batches."),
    h("div", { class: "card" }, h("div", { class: "params" }, field("patch (px)", patch), field("stride (px)", stride),
      field("fill", fill), target.field), h("div", { class: "actions" }, run), errors),
    h("div", { class: "card" }, result));
  state.on("model", () => clear(result));
  state.on("image", () => clear(result));
}
