// What the panels share: the model, the image, the layer and channel in view. Panels listen for changes
// (`state.on("model", fn)`) and set them (`state.set("channel", 7)`); nothing else is global.

const bus = new EventTarget();
const values = {
  model: null, // ModelInfo with layers
  image: null, // {id, width, height, format, name, url (object URL of the file), element (loaded <img>)}
  layer: null, // a layer name of the model
  channel: null, // a channel index of that layer
  schema: null, // /openapi.json
};

// The request schema of one kind (components.schemas.<Kind>Job: `kind`, `model`, `params` and its inputs), or null.
function jobSchema(kind) {
  const schemas = values.schema?.components?.schemas || {};
  return Object.values(schemas).find((s) => s.properties?.kind?.const === kind) || null;
}

export const state = {
  get: (name) => values[name],
  set(name, value) {
    values[name] = value;
    bus.dispatchEvent(new CustomEvent(name, { detail: value }));
  },
  on(name, listener) {
    bus.addEventListener(name, (e) => listener(e.detail));
  },
  // Params schema of a kind (components.schemas.<Kind>Params), or null when the API does not offer it.
  kindParams(kind) {
    const schemas = values.schema?.components?.schemas || {};
    const params = jobSchema(kind)?.properties?.params;
    const ref = params?.$ref || params?.allOf?.[0]?.$ref;
    return ref ? schemas[ref.split("/").pop()] : null;
  },
  // Every kind the API offers, in its own order (the `POST /v1/jobs` union's: the registry's).
  kinds() {
    const schemas = values.schema?.components?.schemas || {};
    const union = schemas.JobRequest?.oneOf || [];
    return union.map((s) => schemas[s.$ref?.split("/").pop()]?.properties?.kind?.const).filter(Boolean);
  },
  // Whether a job of the kind takes this input ("image", "style_image", "dataset"): a property of its request.
  reads(kind, input) {
    return Boolean(jobSchema(kind)?.properties?.[input]);
  },
  // The family of a kind, told from its schema alone, so that a new kind shows up in its panel with no change
  // here: "attribution" (a map of one image that the job scores: its params take `evaluate`), "dataset" (reads a
  // dataset: the Datasets and Atlases panels), "trust" (runs other kinds: `method_params`), else "making" (an
  // image made by optimisation). Null for a kind the API does not offer.
  family(kind) {
    const params = state.kindParams(kind)?.properties;
    if (!params) return null;
    if (params.evaluate) return "attribution";
    if (state.reads(kind, "dataset")) return "dataset";
    if (params.method_params) return "trust";
    if (params.groups?.["x-units-panel"]) return "units"; // neuron_groups: the Units panel, not an image made
    return "making";
  },
  kindsOf(family) {
    return state.kinds().filter((kind) => state.family(kind) === family);
  },
  kindSummary(kind) {
    return jobSchema(kind)?.description || "";
  },
  label(index) {
    const labels = values.model?.labels;
    return labels && labels[index] !== undefined ? labels[index] : `class ${index}`;
  },
};

// Switch to a panel by its name ("layers", "making", ...).
export const showPanel = (name) => bus.dispatchEvent(new CustomEvent("panel", { detail: name }));
export const onPanel = (listener) => bus.addEventListener("panel", (e) => listener(e.detail));
