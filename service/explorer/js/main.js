// The explorer's shell: API key, model choice, the current image in the header, and the panel tabs.
import { api, apiKey } from "./api.js";
import { state, onPanel, showPanel } from "./state.js";
import { h, clear } from "./ui.js";
import * as models from "./panels/models.js";
import * as image from "./panels/image.js";
import * as layers from "./panels/layers.js";
import * as occlusion from "./panels/occlusion.js";
import * as attributions from "./panels/attributions.js";
import * as making from "./panels/making.js";
import * as datasets from "./panels/datasets.js";
import * as atlas from "./panels/atlas.js";
import * as jobs from "./panels/jobs.js";

const PANELS = { models, image, layers, occlusion, attributions, making, datasets, atlas, jobs };
const $ = (id) => document.getElementById(id);
const globalError = $("global-error");

function showGlobal(error) {
  globalError.hidden = !error;
  clear(globalError, error ? [h("strong", {}, `${error.code || "error"}: `), error.message] : []);
}

// --- tabs (WAI-ARIA tabs: arrows move between them, Enter/Space or click opens) --------------------
const tabs = [...document.querySelectorAll('[role="tab"]')];
let current = null;

function open(name, focus = false) {
  if (!PANELS[name]) name = "image";
  for (const tab of tabs) {
    const selected = tab.dataset.panel === name;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    $(`panel-${tab.dataset.panel}`).hidden = !selected;
    if (selected && focus) tab.focus();
  }
  if (current !== name) {
    current = name;
    history.replaceState(null, "", `#${name}`);
    PANELS[name].shown?.();
  }
}

for (const [i, tab] of tabs.entries()) {
  tab.addEventListener("click", () => open(tab.dataset.panel));
  tab.addEventListener("keydown", (e) => {
    const step = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1 }[e.key];
    if (step) {
      e.preventDefault();
      open(tabs[(i + step + tabs.length) % tabs.length].dataset.panel, true);
    } else if (e.key === "Home" || e.key === "End") {
      e.preventDefault();
      open(tabs[e.key === "Home" ? 0 : tabs.length - 1].dataset.panel, true);
    }
  });
}
onPanel((name) => open(name));

// --- models -------------------------------------------------------------------------------------------
const select = $("model-select");

export async function loadModels(preferred) {
  try {
    const { models: list } = await api.models();
    const want = preferred || select.value || state.get("model")?.id || list[0]?.id;
    clear(select, list.map((m) => h("option", { value: m.id, selected: m.id === want }, `${m.name} (${m.id})`)));
    state.set("models", list);
    if (list.length && (!state.get("model") || state.get("model").id !== select.value)) await chooseModel(select.value);
    showGlobal(null);
    return list;
  } catch (error) {
    clear(select, h("option", { value: "" }, "—"));
    showGlobal(error.status === 401 ? { code: error.code, message: `${error.message} Type your API key above.` } : error);
    return [];
  }
}

async function chooseModel(id) {
  if (!id) return;
  try {
    const model = await api.model(id);
    select.value = id;
    state.set("model", model);
    state.set("layer", null);
    state.set("channel", null);
  } catch (error) {
    showGlobal(error);
  }
}
select.addEventListener("change", () => chooseModel(select.value));
state.on("reload-models", (preferred) => loadModels(preferred));

// --- the current image, shown in the header -----------------------------------------------------------
state.on("image", (img) => {
  const box = $("current-image");
  if (!img) return clear(box, "no image yet");
  const thumb = h("img", { src: img.url, alt: `current image: ${img.name}`, width: 40, height: 40 });
  const link = h("button", { type: "button", class: "link" }, `${img.name} · ${img.width}×${img.height}`);
  link.addEventListener("click", () => showPanel("image"));
  clear(box, thumb, link);
});

// --- API key --------------------------------------------------------------------------------------------
const keyInput = $("api-key");
keyInput.value = apiKey.get();
$("api-key-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  apiKey.set(keyInput.value.trim());
  await loadModels();
  state.set("key", apiKey.get());
});

// --- start --------------------------------------------------------------------------------------------
for (const [name, panel] of Object.entries(PANELS)) panel.mount($(`panel-${name}`));
open(location.hash.slice(1) || "image");
(async () => {
  try {
    state.set("schema", await api.openapi());
  } catch (error) {
    showGlobal(error);
  }
  await loadModels();
})();
