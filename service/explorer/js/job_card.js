// One job on screen: submit it, follow its events (progress, previews, files readable early), cancel it, and hand
// the ended Job to `render` to show its artifacts. Used by every panel that starts a job.
import { api, follow } from "./api.js";
import { h, clear, errorBox, progressBar, metricsList } from "./ui.js";

export const ENDED = ["finished", "failed", "canceled"];

// `spec` is the POST /v1/jobs body. `render(job, body, early)` fills `body` when the job finishes.
// `onArtifact(artifact, job, early)` is called for each `artifact` event ({name, media_type, url}: a file readable
// while the job still runs, e.g. an attribution map before its scores) and may fill `early`, which stays as it is
// when the job ends (a map shown early is not drawn again). It may be called twice for one file (a renewed stream
// replays the events), and never for a job that was already finished (cached): `render` covers that case.
// `existing` (a Job from the API) shows that job instead of submitting `spec`: the Jobs panel's "open".
export function jobCard(title, spec, { render, onPreview, onArtifact, className = "", existing = null } = {}) {
  const status = h("span", { class: "status", "data-status": "submitting" }, "submitting");
  const bar = progressBar();
  const cancel = h("button", { type: "button", class: "secondary", disabled: true }, "Cancel");
  const preview = h("img", { class: "preview", alt: `${title}: preview`, hidden: true });
  const early = h("div", { class: "job-early" });
  const body = h("div", { class: "job-body" });
  const errors = errorBox();
  const card = h("article", { class: `card job ${className}`, "aria-label": title },
    h("header", {}, h("h3", {}, title), status, cancel), h("p", { class: "notice subject" }, subject(spec)), bar, errors, preview, early, body);
  let job = null;

  const setStatus = (value) => {
    status.textContent = value;
    status.dataset.status = value;
    card.dataset.status = value;
  };
  cancel.addEventListener("click", async () => {
    if (!job) return;
    cancel.disabled = true;
    try {
      job = await api.cancel(job.id);
      setStatus(job.status);
    } catch (error) {
      errors.show(error);
    }
  });

  card.done = (async () => {
    try {
      job = existing || await api.submit(spec);
      card.dataset.job = job.id;
      setStatus(job.status);
      bar.update(job.progress, job.status);
      cancel.disabled = ENDED.includes(job.status);
      const ended = await follow(job, {
        progress: (progress) => {
          if (status.dataset.status === "queued") setStatus("started");
          bar.update(progress, "running");
        },
        preview: ({ step, png_base64 }) => {
          preview.hidden = false;
          preview.src = `data:image/png;base64,${png_base64}`;
          preview.dataset.step = step;
          if (onPreview) onPreview(step);
        },
        artifact: (artifact) => {
          if (onArtifact) Promise.resolve().then(() => onArtifact(artifact, job, early)).catch((error) => errors.show(error));
        },
      });
      job = ended;
      setStatus(job.status);
      cancel.disabled = true;
      bar.update(job.progress, job.status + (job.cached ? " (cached)" : ""));
      if (job.status === "failed") errors.show(job.error || { message: "the job failed" });
      if (job.status === "finished") {
        preview.hidden = true;
        clear(body);
        if (render) await render(job, body, early);
        const metrics = metricsList(job.result?.metrics);
        if (metrics) body.append(metrics);
        body.append(artifactLinks(job));
      }
      return job;
    } catch (error) {
      setStatus("error");
      cancel.disabled = true;
      errors.show(error);
      return null;
    }
  })();
  return card;
}

// Put a new job's card first in `container` and bring it into view, so that the click visibly did something.
export function showCard(container, card) {
  container.prepend(card);
  card.scrollIntoView({ block: "nearest" });
  return card;
}

// What the job is about, in one line: model, image or dataset, and the params that matter most.
function subject(spec) {
  const p = spec.params || {};
  const bits = [spec.model];
  if (spec.dataset) bits.push(`dataset ${spec.dataset.slice(0, 8)}…`);
  if (spec.image?.dataset) bits.push(`image ${spec.image.index} of dataset ${spec.image.dataset.slice(0, 8)}…`);
  for (const name of ["layer", "channel", "target", "method"]) if (p[name] !== undefined && p[name] !== null) bits.push(`${name} ${p[name]}`);
  return bits.join(" · ");
}

// The POST /v1/jobs body a Job was made from, as far as the Job tells it (to show an existing job in a card).
export const specOf = (job) => ({ kind: job.kind, model: job.model, params: job.params,
  ...(job.inputs?.dataset ? { dataset: job.inputs.dataset } : {}) });

// Links to a finished job's artifacts; each is fetched with the key and opened as a blob.
export function artifactLinks(job) {
  const artifacts = job.result?.artifacts || [];
  return h("p", { class: "artifacts" }, "Artifacts: ", artifacts.map((a) => {
    const link = h("a", { href: "#", "data-artifact": a.name }, a.name);
    link.addEventListener("click", async (e) => {
      e.preventDefault();
      const url = await api.artifact(job.id, a.name);
      const save = h("a", { href: url, download: a.name });
      document.body.append(save);
      save.click();
      save.remove();
    });
    return [link, " "];
  }));
}
