// 8. Jobs: the caller's jobs, newest first: when, what (kind, model, image or dataset, layer, channel, the main
// params), how long it took, status and progress, its artifacts; "open" puts a finished result back into the
// panel that made it (the panels listen for `open-job`). Above them, what the key holds against its quotas
// (`GET /v1/usage`), so that a 429 `quota_exceeded` is never the first a user hears of a limit.
import { api } from "../api.js";
import { state } from "../state.js";
import { h, clear, field, errorBox, busy, table, when, fmt, bytes } from "../ui.js";
import { ENDED, artifactLinks } from "../job_card.js";
import { DATASET_VIEWS } from "./datasets.js";

const STATUSES = ["", "queued", "started", "finished", "failed", "canceled"];
const OPENS = { attribution: "Attributions", dataset: "Datasets" }; // families whose panels show an existing job
const MAIN_PARAMS = ["layer", "channel", "target", "method", "steps", "k", "position"];

// What the key holds, each against its limit, in one line.
function usageLine(u) {
  const of = (held, text = (x) => x) => `${text(held.held)} of ${text(held.limit)}`;
  return [
    `${u.tenant ? `Key “${u.tenant}”` : "This open service"}: jobs waiting ${of(u.queued_jobs)}, running ${u.running_jobs}` +
      (u.max_running_jobs ? ` of ${u.max_running_jobs}` : ""),
    `images ${of(u.image_bytes, bytes)}`,
    `job files ${of(u.job_bytes, bytes)}`,
    `models ${of(u.models)} (${of(u.model_bytes, bytes)})`,
    `datasets ${of(u.datasets)} (${of(u.dataset_bytes, bytes)})`,
  ].join(" · ");
}

// How long a job ran (or has been running): "4.2 s", "3 min 5 s"; queued: "—".
function duration(job) {
  if (!job.started_at) return "—";
  const seconds = ((job.ended_at ? new Date(job.ended_at) : new Date()) - new Date(job.started_at)) / 1000;
  if (seconds < 60) return `${fmt(Math.max(seconds, 0), 1)} s`;
  return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}

export function mount(root) {
  const errors = errorBox();
  const status = h("select", { id: "jobs-status" }, STATUSES.map((s) => h("option", { value: s }, s || "any status")));
  const kind = h("select", { id: "jobs-kind" }, h("option", { value: "" }, "any kind"));
  const refresh = h("button", { type: "button", id: "jobs-refresh" }, "Refresh");
  const list = h("div", { id: "jobs-list", class: "reflow" });
  const usage = h("p", { id: "jobs-usage", class: "notice" });
  let timer = null;
  // Dataset id → name (null: unnamed, or gone), fetched once and kept between refreshes; fetched again when a
  // dataset is made or deleted, the key changes, or a job names a dataset the map lacks. A promise, or null.
  let datasetNames = null;

  function names() {
    datasetNames ||= api.datasets().then(({ datasets }) => new Map(datasets.map((d) => [d.id, d.name || null])))
      .catch(() => {
        datasetNames = null; // not kept: asked again at the next refresh
        return new Map();
      });
    return datasetNames;
  }

  function renderKinds() {
    const keep = kind.value;
    clear(kind, h("option", { value: "" }, "any kind"), state.kinds().map((k) => h("option", { value: k, selected: k === keep }, k)));
  }

  // The job's input in words: the current image by its name, another image by its id's start, a dataset by name.
  function subject(job, named) {
    const bits = [h("code", {}, job.model)];
    const image = job.inputs?.image;
    if (image) {
      const current = state.get("image");
      bits.push(current && image.startsWith(current.id) ? `image ${current.name}` : `image ${image.slice(0, 8)}…`);
    }
    const dataset = job.inputs?.dataset;
    if (dataset) bits.push(`dataset ${named.get(dataset) || `${dataset.slice(0, 8)}…`}`);
    for (const name of MAIN_PARAMS) {
      const value = job.params?.[name];
      if (value !== undefined && value !== null) bits.push(`${name} ${Array.isArray(value) ? `[${value.join(", ")}]` : value}`);
    }
    return h("span", { class: "job-subject" }, bits.flatMap((b, i) => (i ? [" · ", b] : [b])));
  }

  function emptyMessage() {
    const what = [status.value, kind.value].filter(Boolean).join(" ");
    return what ? `No ${what} jobs (the filters above show only ${what} jobs).` : "No jobs yet: the jobs you start in the other panels are listed here.";
  }

  async function load() {
    await busy(refresh, errors, async () => {
      const query = new URLSearchParams();
      if (status.value) query.set("status", status.value);
      if (kind.value) query.set("kind", kind.value);
      const fresh = !datasetNames;
      let [{ jobs }, named, held] = await Promise.all([api.jobs(query.size ? `?${query}` : ""), names(),
        api.usage().catch(() => null)]);
      usage.textContent = held ? usageLine(held) : "";
      const unknown = jobs.map((j) => j.inputs?.dataset).filter((id) => id && !named.has(id));
      if (unknown.length) {
        if (!fresh) {
          datasetNames = null;
          named = await names();
        }
        for (const id of unknown) if (!named.has(id)) named.set(id, null); // gone: not asked for again
      }
      clear(list, jobs.length ? table([
        { label: "Created", value: (j) => h("time", { datetime: j.created_at }, when(j.created_at)) },
        { label: "Job", value: (j) => [h("strong", {}, j.kind), h("br"), subject(j, named)] },
        { label: "Took", value: (j) => duration(j) },
        { label: "Status", value: (j) => [h("span", { class: "status", "data-status": j.status }, j.status + (j.cached ? " (cached)" : "")),
          ENDED.includes(j.status) ? null : h("progress", { max: Math.max(j.progress.total, 1), value: j.progress.step,
            "aria-label": `${j.kind} progress` })] },
        { label: "Artifacts / error", value: (j) => j.error ? `${j.error.code}: ${j.error.message}` : j.result ? artifactLinks(j) : "" },
        { label: "", value: (j) => [openButton(j), ENDED.includes(j.status) ? null : cancelButton(j)] },
      ], jobs) : h("p", { class: "notice", id: "jobs-empty" }, emptyMessage()));
      list.querySelectorAll("tbody tr").forEach((tr, i) => (tr.dataset.job = jobs[i].id));
      const running = jobs.some((j) => !ENDED.includes(j.status));
      clearTimeout(timer);
      if (running && !root.hidden) timer = setTimeout(load, 1500);
    });
  }

  function openButton(job) {
    const family = state.family(job.kind);
    const panel = OPENS[family];
    if (job.status !== "finished" || !panel || (family === "dataset" && !DATASET_VIEWS.includes(job.kind))) return null;
    return h("button", { type: "button", class: "secondary open", title: `show this result in the ${panel} panel`,
      onclick: () => state.set("open-job", job) }, `Open in ${panel}`);
  }

  function cancelButton(job) {
    const button = h("button", { type: "button", class: "secondary" }, "Cancel");
    button.addEventListener("click", () => busy(button, errors, async () => {
      await api.cancel(job.id);
      await load();
    }));
    return button;
  }

  refresh.addEventListener("click", load);
  status.addEventListener("change", load);
  kind.addEventListener("change", load);
  root.append(
    h("h2", {}, "Jobs"),
    h("p", { class: "intro" }, "Your jobs, newest first (the list refreshes itself while some are running). " +
      "“Open” shows a finished result again in the panel that made it."),
    h("div", { class: "card" }, h("div", { class: "actions" }, field("status", status), field("kind", kind), refresh), usage, errors,
      list));
  state.on("key", () => {
    datasetNames = null;
    load();
  });
  state.on("datasets-changed", () => (datasetNames = null));
  state.on("schema", renderKinds);
  mount.shown = load;
}

export const shown = () => mount.shown && mount.shown();
