// The public /v1 API, as any front end calls it: the key in the Authorization header (kept in
// sessionStorage, never in a URL), JSON errors turned into ApiError with the service's message,
// artifacts and images fetched as blobs, job events through EventSource with the job's events token.

const KEY_STORAGE = "convscope.apiKey";

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export const apiKey = {
  get: () => sessionStorage.getItem(KEY_STORAGE) || "",
  set: (key) => (key ? sessionStorage.setItem(KEY_STORAGE, key) : sessionStorage.removeItem(KEY_STORAGE)),
};

// Whether this service needs a key, from `GET /v1/auth` (asked before any other call). With keys on and none
// typed, a /v1 call is not sent at all: it would be refused with 401, which the browser logs as an error.
export const access = { keysRequired: false };
const NO_KEY = "this service needs an API key: type it in the field at the top of the page";

function headers(extra = {}) {
  const key = apiKey.get();
  return key ? { Authorization: `Bearer ${key}`, ...extra } : { ...extra };
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    /* not JSON: described below */
  }
  const error = body && body.error;
  if (error) return new ApiError(response.status, error.code, error.message, error.details);
  return new ApiError(response.status, "http_error", `${response.status} ${response.statusText}`.trim(), null);
}

// One request; resolves to the Response when it is 2xx, else throws ApiError with the JSON error's message.
export async function call(path, { method = "GET", json, form, accept, signal } = {}) {
  if (access.keysRequired && !apiKey.get() && path.startsWith("/v1/") && path !== "/v1/auth") {
    throw new ApiError(401, "missing_api_key", NO_KEY, null);
  }
  const init = { method, headers: headers(accept ? { Accept: accept } : {}), signal };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form) {
    init.body = form;
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "unreachable", "the service cannot be reached: is it running?", null);
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

export const getJson = async (path, options) => (await call(path, options)).json();
export const postJson = async (path, json, options = {}) => (await call(path, { method: "POST", json, ...options })).json();
export const blobUrl = async (path, options) => URL.createObjectURL(await (await call(path, options)).blob());
export const buffer = async (path, options) => (await call(path, options)).arrayBuffer();

export const enc = encodeURIComponent;

// --- a .npy file (float32 or other little-endian numeric) → {shape, data} -------------------------
const NPY_TYPES = { "<f4": Float32Array, "<f8": Float64Array, "<i4": Int32Array, "<i8": BigInt64Array, "|u1": Uint8Array,
  "<u2": Uint16Array, "<i2": Int16Array };

export function parseNpy(arrayBuffer) {
  const bytes = new Uint8Array(arrayBuffer);
  if (bytes[0] !== 0x93 || String.fromCharCode(...bytes.slice(1, 6)) !== "NUMPY") throw new Error("not a .npy file");
  const major = bytes[6];
  const view = new DataView(arrayBuffer);
  const headerLength = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  const header = new TextDecoder().decode(bytes.slice(start, start + headerLength));
  const descr = /'descr':\s*'([^']+)'/.exec(header)[1];
  const fortran = /'fortran_order':\s*True/.test(header);
  const shape = (/'shape':\s*\(([^)]*)\)/.exec(header)[1].match(/\d+/g) || []).map(Number);
  const Type = NPY_TYPES[descr];
  if (!Type || fortran) throw new Error(`unsupported .npy layout ${descr}`);
  const offset = start + headerLength;
  const count = shape.reduce((a, b) => a * b, 1);
  const data = new Type(arrayBuffer.slice(offset, offset + count * Type.BYTES_PER_ELEMENT));
  return { shape, data: Type === BigInt64Array ? Float64Array.from(data, Number) : data };
}

// --- the explorer's calls --------------------------------------------------------------------------
export const api = {
  auth: () => getJson("/v1/auth"),
  models: () => getJson("/v1/models"),
  model: (id) => getJson(`/v1/models/${enc(id)}`),
  uploadModel: (form) => call("/v1/models", { method: "POST", form }).then((r) => r.json()),
  deleteModel: (id) => call(`/v1/models/${enc(id)}`, { method: "DELETE" }),
  uploadImage: (file) => {
    const form = new FormData();
    form.append("file", file);
    return call("/v1/images", { method: "POST", form }).then((r) => r.json());
  },
  image: (id) => blobUrl(`/v1/images/${enc(id)}`),
  predict: (model, body) => postJson(`/v1/models/${enc(model)}/predict`, body),
  activations: (model, body) => call(`/v1/models/${enc(model)}/activations`, { method: "POST", json: body }),
  occlusion: (model, body) => call(`/v1/models/${enc(model)}/occlusion`, { method: "POST", json: body }),
  filters: (model, layer) => blobUrl(`/v1/models/${enc(model)}/layers/${enc(layer)}/filters`),
  // A unit's circuit as JSON: the `k` units of the layer before with the largest expanded weights into it.
  circuit: (model, layer, channel, k = 8) =>
    getJson(`/v1/models/${enc(model)}/layers/${enc(layer)}/units/${channel}/circuit?k=${k}`),
  datasets: () => getJson("/v1/datasets"),
  dataset: (id) => getJson(`/v1/datasets/${enc(id)}`),
  uploadDataset: (form) => call("/v1/datasets", { method: "POST", form }).then((r) => r.json()),
  deleteDataset: (id) => call(`/v1/datasets/${enc(id)}`, { method: "DELETE" }),
  datasetImage: (id, index, size) => blobUrl(`/v1/datasets/${enc(id)}/images/${index}${size ? `?size=${size}` : ""}`),
  submit: (spec) => postJson("/v1/jobs", spec),
  job: (id) => getJson(`/v1/jobs/${enc(id)}`),
  jobs: (query = "") => getJson(`/v1/jobs${query}`),
  usage: () => getJson("/v1/usage"),
  cancel: (id) => call(`/v1/jobs/${enc(id)}`, { method: "DELETE" }).then((r) => r.json()),
  artifact: (job, name) => blobUrl(`/v1/jobs/${enc(job)}/artifacts/${enc(name)}`),
  artifactJson: (job, name) => getJson(`/v1/jobs/${enc(job)}/artifacts/${enc(name)}`),
  artifactNpy: async (job, name) => parseNpy(await buffer(`/v1/jobs/${enc(job)}/artifacts/${enc(name)}`)),
  openapi: () => getJson("/openapi.json"),
};

// Follow a job: EventSource with the Job's events token (no key in the URL). Calls on.progress(progress),
// on.preview({step, png_base64}), on.artifact({name, media_type, url}) for a file readable before the job ends
// (an attribution map while its scores are computed), and resolves with the ended Job. A token that expires is
// renewed by getting the job again (the new stream replays the job's events: handlers must bear repeats).
export function follow(job, on = {}) {
  return new Promise((resolve, reject) => {
    let source = null;
    let ended = false;
    const open = (token) => {
      source = new EventSource(`/v1/jobs/${enc(job.id)}/events?token=${enc(token)}`);
      source.addEventListener("progress", (e) => on.progress && on.progress(JSON.parse(e.data)));
      source.addEventListener("preview", (e) => on.preview && on.preview(JSON.parse(e.data)));
      source.addEventListener("artifact", (e) => on.artifact && on.artifact(JSON.parse(e.data)));
      source.addEventListener("end", (e) => {
        ended = true;
        source.close();
        resolve(JSON.parse(e.data));
      });
      source.onerror = async () => {
        if (ended || source.readyState !== EventSource.CLOSED) return; // the browser reconnects by itself
        try {
          const fresh = await api.job(job.id);
          if (["finished", "failed", "canceled"].includes(fresh.status)) resolve(fresh);
          else open(fresh.events_token);
        } catch (error) {
          reject(error);
        }
      };
    };
    if (["finished", "failed", "canceled"].includes(job.status)) resolve(job);
    else open(job.events_token);
  });
}
