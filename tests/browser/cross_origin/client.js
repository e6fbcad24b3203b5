// A front end on another origin, driving the convscope API: an image upload, a predict, an activations
// PNG, a job followed live with EventSource (events token, no key in the URL) and its heatmap artifact.
// Everything it sees is written as JSON into <pre id="result"> for the test to read.

const params = new URLSearchParams(location.hash.slice(1));
const API = params.get("api");
const KEY = params.get("key");
const MODEL = params.get("model") || "efficientnet-lite0";
const LAYER = params.get("layer") || "_blocks.2._relu1";
const AUTH = { Authorization: `Bearer ${KEY}` };
const result = { steps: [] };

async function call(path, options = {}) {
  const response = await fetch(`${API}${path}`, { ...options, headers: { ...AUTH, ...(options.headers || {}) } });
  if (!response.ok) {
    const body = await response.text();
    throw new Error(`${options.method || "GET"} ${path}: ${response.status} ${body}`);
  }
  return response;
}

const postJson = (path, body) => call(path, {
  method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
});

function base64(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result.slice(reader.result.indexOf(",") + 1));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

async function show(img, blob) {
  img.src = URL.createObjectURL(blob);
  await img.decode();
  return { naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight, type: blob.type };
}

function follow(job) {
  // EventSource cannot send headers: the Job's events_token opens its stream.
  return new Promise((resolve, reject) => {
    const progress = [];
    const source = new EventSource(`${API}/v1/jobs/${job.id}/events?token=${encodeURIComponent(job.events_token)}`);
    const bar = document.getElementById("progress");
    source.addEventListener("progress", (event) => {
      const data = JSON.parse(event.data);
      progress.push(data);
      bar.max = data.total || 1;
      bar.value = data.step;
    });
    source.addEventListener("end", (event) => {
      source.close();
      const end = JSON.parse(event.data);
      document.getElementById("job-status").textContent = end.status;
      resolve({ progress, end });
    });
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) reject(new Error("the event stream was refused"));
    };
  });
}

async function run() {
  const photo = await (await fetch("cat.png")).blob();

  // An image upload (multipart), then a predict naming it by id.
  const form = new FormData();
  form.append("file", photo, "cat.png");
  const uploaded = await call("/v1/images", { method: "POST", body: form });
  const image = await uploaded.json();
  result.image = image;
  result.steps.push("upload");

  const predicted = await (await postJson(`/v1/models/${MODEL}/predict`, { image: { id: image.id }, top_k: 3 })).json();
  result.predictions = predicted.predictions;
  document.getElementById("predictions").replaceChildren(...predicted.predictions.map((p) => {
    const item = document.createElement("li");
    item.textContent = `${p.label} ${(100 * p.probability).toFixed(1)} %`;
    return item;
  }));
  result.steps.push("predict");

  // An activations PNG for the image sent inline as base64; an exposed header read on the way.
  const activations = await postJson(`/v1/models/${MODEL}/activations`, {
    image: { data: await base64(photo) }, layer: LAYER,
  });
  result.activations = {
    ...(await show(document.getElementById("activations"), await activations.blob())),
    requestId: activations.headers.get("X-Request-ID"),
  };
  result.steps.push("activations");

  // A whole job, followed live.
  const submitted = await postJson("/v1/jobs", {
    kind: "smoothgrad", model: MODEL, image: { id: image.id }, params: { samples: 8, evaluate: false },
  });
  const job = await submitted.json();
  result.job = { id: job.id, status: job.status, location: submitted.headers.get("Location"), hasToken: !!job.events_token };
  const { progress, end } = await follow(job);
  result.progress = progress;
  result.end = { status: end.status, progress: end.progress, artifacts: (end.result?.artifacts || []).map((a) => a.name) };
  result.steps.push("job");

  // Its heatmap, fetched with the key like every other call.
  const heatmap = end.result.artifacts.find((a) => a.name === "heatmap.png");
  const artifact = await call(heatmap.url.startsWith("http") ? new URL(heatmap.url).pathname : heatmap.url);
  result.heatmap = await show(document.getElementById("heatmap"), await artifact.blob());
  result.steps.push("heatmap");
}

run().then(
  () => { result.done = true; },
  (error) => { result.error = String(error && error.message || error); },
).finally(() => {
  document.getElementById("result").textContent = JSON.stringify(result, null, 2);
});
