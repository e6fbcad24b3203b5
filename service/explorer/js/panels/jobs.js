// 8. Jobs: the caller's jobs, newest first, with status, progress and links to their artifacts.
import { api } from "../api.js";
import { state } from "../state.js";
import { h, clear, field, errorBox, busy, table } from "../ui.js";
import { ENDED, artifactLinks } from "../job_card.js";

const STATUSES = ["", "queued", "started", "finished", "failed", "canceled"];

export function mount(root) {
  const errors = errorBox();
  const status = h("select", { id: "jobs-status" }, STATUSES.map((s) => h("option", { value: s }, s || "any status")));
  const refresh = h("button", { type: "button", id: "jobs-refresh" }, "Refresh");
  const list = h("div", { id: "jobs-list" });
  let timer = null;

  async function load() {
    await busy(refresh, errors, async () => {
      const query = status.value ? `?status=${status.value}` : "";
      const { jobs } = await api.jobs(query);
      clear(list, jobs.length ? table([
        { label: "Created", value: (j) => new Date(j.created_at).toLocaleTimeString() },
        { label: "Kind", value: (j) => j.kind },
        { label: "Model", value: (j) => h("code", {}, j.model) },
        { label: "Status", value: (j) => h("span", { class: "status", "data-status": j.status }, j.status + (j.cached ? " (cached)" : "")) },
        { label: "Progress", value: (j) => h("progress", { max: Math.max(j.progress.total, 1), value: j.progress.step,
          "aria-label": `${j.kind} progress` }) },
        { label: "Artifacts / error", value: (j) => j.error ? `${j.error.code}: ${j.error.message}` : j.result ? artifactLinks(j) : "" },
        { label: "", value: (j) => ENDED.includes(j.status) ? "" : cancelButton(j) },
      ], jobs) : h("p", { class: "notice" }, "No jobs yet."));
      list.querySelectorAll("tbody tr").forEach((tr, i) => (tr.dataset.job = jobs[i].id));
      const running = jobs.some((j) => !ENDED.includes(j.status));
      clearTimeout(timer);
      if (running && !root.hidden) timer = setTimeout(load, 1500);
    });
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
  root.append(
    h("h2", {}, "Jobs"),
    h("p", { class: "intro" }, "Your jobs, newest first (the list refreshes itself while some are running)."),
    h("div", { class: "card" }, h("div", { class: "actions" }, field("status", status), refresh), errors, list));
  state.on("key", load);
  mount.shown = load;
}

export const shown = () => mount.shown && mount.shown();
