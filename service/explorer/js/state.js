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
    const job = Object.values(schemas).find((s) => s.properties?.kind?.const === kind);
    const ref = job?.properties?.params?.$ref || job?.properties?.params?.allOf?.[0]?.$ref;
    return ref ? schemas[ref.split("/").pop()] : null;
  },
  kinds() {
    const mapping = values.schema?.components?.schemas?.JobRequest?.discriminator?.mapping || {};
    return Object.keys(mapping);
  },
  kindSummary(kind) {
    const schemas = values.schema?.components?.schemas || {};
    return Object.values(schemas).find((s) => s.properties?.kind?.const === kind)?.description || "";
  },
  label(index) {
    const labels = values.model?.labels;
    return labels && labels[index] !== undefined ? labels[index] : `class ${index}`;
  },
};

// Switch to a panel by its name ("layers", "making", ...).
export const showPanel = (name) => bus.dispatchEvent(new CustomEvent("panel", { detail: name }));
export const onPanel = (listener) => bus.addEventListener("panel", (e) => listener(e.detail));
