// A class chooser shared by the panels that take a `target`: the top-1 class by default, or any class by
// index or label (a datalist of the model's labels).
import { state } from "../state.js";
import { h, field, uid } from "../ui.js";

export function targetPicker(id, label = "target class") {
  const listId = uid("labels");
  const input = h("input", { type: "text", id, list: listId, placeholder: "top-1 class" });
  const options = h("datalist", { id: listId });
  const refresh = () => {
    const labels = state.get("model")?.labels || [];
    options.replaceChildren(...labels.map((l, i) => h("option", { value: l }, `${i}`)));
  };
  state.on("model", () => {
    input.value = "";
    refresh();
  });
  refresh();
  return {
    field: h("div", {}, field(label, input, "an index or a label; empty: the top-1 class"), options),
    input,
    // null (top-1), an integer index, or a label string
    value() {
      const text = input.value.trim();
      if (!text) return null;
      return /^\d+$/.test(text) ? Number(text) : text;
    },
  };
}
