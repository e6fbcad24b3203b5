// The explorer's shell: API key, model choice, the current image in the header, and the panel tabs.
import { access, api, apiKey } from "./api.js";
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
import * as units from "./panels/units.js";
import * as jobs from "./panels/jobs.js";

const PANELS = { models, image, layers, occlusion, attributions, making, datasets, atlas, units, jobs };
const $ = (id) => document.getElementById(id);
const globalError = $("global-error");

// An error ({code, message}) or a plain notice ({message}) above the panels; null hides it.
function showGlobal(error) {
  globalError.hidden = !error;
  globalError.classList.toggle("notice", Boolean(error && !error.code));
  clear(globalError, error ? [error.code ? h("strong", {}, `${error.code}: `) : "", error.message] : []);
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
    if (error.status === 401) askForKey(error.code === "invalid_api_key" ? "invalid" : "missing");
    else showGlobal(error);
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
// `GET /v1/auth` says whether a key is needed and whether the typed one is accepted, so the page asks for a
// key before it calls anything that would refuse it.
const keyInput = $("api-key");
const keyForm = $("api-key-form");
keyInput.value = apiKey.get();

const KEY_NOTICES = {
  missing: "This service needs an API key: type it in the highlighted field at the top of the page and press “Use key”.",
  invalid: "That API key was not accepted: check it, type it again in the highlighted field and press “Use key”.",
};

function askForKey(reason) {
  keyForm.classList.add("attention");
  showGlobal({ message: KEY_NOTICES[reason] });
}

// Whether the page may call the API with the key it holds (asks /v1/auth; shows what is missing when not).
async function keyAccepted() {
  let status;
  try {
    status = await api.auth();
  } catch (error) {
    showGlobal(error);
    return false;
  }
  access.keysRequired = status.keys_required;
  keyInput.placeholder = status.keys_required ? "your API key" : "not needed: this service is open";
  if (status.key === "missing" || status.key === "invalid") {
    askForKey(status.key);
    return false;
  }
  keyForm.classList.remove("attention");
  showGlobal(null);
  return true;
}

keyForm.addEventListener("submit", async (e) => {
  e.preventDefault();
  apiKey.set(keyInput.value.trim());
  if (!(await keyAccepted())) {
    apiKey.set("");
    return;
  }
  await loadModels();
  state.set("key", apiKey.get());
});

// --- start --------------------------------------------------------------------------------------------
for (const [name, panel] of Object.entries(PANELS)) panel.mount($(`panel-${name}`));
(async () => {
  const ready = await keyAccepted();
  open(location.hash.slice(1) || "image");  // after the key check: a panel may call the API as it opens
  try {
    state.set("schema", await api.openapi());
  } catch (error) {
    showGlobal(error);
  }
  if (ready) await loadModels();
})();
