// 5. Attributions: run several attribution kinds on the current image and target, side by side, each with
// live progress; one slider (and one per map) blends the heatmaps over the image. A map is drawn as soon as the
// worker has made it (its `artifact` event), while the job goes on to score it; the scores come when it ends.
// They say how faithful the map is to the model, ROAD first (Rong et al. 2022: remove the pixels the map ranks
// highest or lowest, fill them in from their neighbours, watch the class's probability), read against random
// maps of the map's own grain and drawn as two curves; deletion/insertion (Petsiuk et al. 2018) second, with
// what removed pixels become named. Where the API offers `compare`, the chosen methods are ranked by ROAD.
import { api } from "../api.js";
import { state, showPanel } from "../state.js";
import { h, clear, field, errorBox, paramsForm, table, fmt } from "../ui.js";
import { attributionMap, blend, imageFrom, inputCanvas, lineChart, mapCanvas } from "../viz.js";
import { jobCard, specOf } from "../job_card.js";
import { targetPicker } from "./target.js";

// The methods offered are the API's attribution kinds (read from its schema: `state.kindsOf`); these start ticked.
const CHOSEN = new Set(["saliency", "gradcam", "integrated_gradients"]);

// A kind whose map does not depend on the class (Eigen-CAM) marks its `target` field so in its schema.
function hasNoTarget(kind) {
  return Boolean(state.kindParams(kind)?.properties?.target?.["x-map-independent"]);
}

export function mount(root) {
  const errors = errorBox();
  const target = targetPicker("attr-target");
  const choices = h("fieldset", { class: "kinds", id: "attr-kinds" }, h("legend", {}, "Methods"));
  const forms = {};
  const run = h("button", { type: "button", id: "attr-run" }, "Run selected");
  const compare = h("button", { type: "button", class: "secondary", id: "attr-compare", hidden: true }, "Compare and rank");
  const opacity = h("input", { type: "range", min: 0, max: 1, step: 0.05, value: 0.6, id: "attr-opacity" });
  const results = h("div", { class: "jobs-grid", id: "attr-results" });

  opacity.addEventListener("input", () => results.querySelectorAll(".blend input[type=range]").forEach((s) => {
    s.value = opacity.value;
    s.dispatchEvent(new Event("input"));
  }));

  function renderChoices() {
    const kinds = state.kindsOf("attribution");
    clear(choices, h("legend", {}, "Methods"), kinds.map((kind) => {
      const box = h("input", { type: "checkbox", name: "kind", value: kind, checked: CHOSEN.has(kind), id: `attr-kind-${kind}` });
      box.addEventListener("change", () => (box.checked ? CHOSEN.add(kind) : CHOSEN.delete(kind)));
      forms[kind] = paramsForm(state.kindParams(kind), { fixed: ["target"] });
      return h("div", { class: "kind" }, h("label", { for: box.id, title: state.kindSummary(kind) }, box, ` ${kind}`),
        hasNoTarget(kind) ? h("small", { class: "no-target", id: `attr-no-target-${kind}` },
          " no target: the same map for every class (the target only picks the class its scores follow)") : null,
        h("details", {}, h("summary", {}, "parameters"), forms[kind]));
    }));
    compare.hidden = !state.kindParams("compare");
  }

  function spec(kind, params) {
    const model = state.get("model");
    const image = state.get("image");
    if (!model || !image) throw { code: "no_image", message: "choose an image in the Image panel first" };
    const t = target.value();
    return { kind, model: model.id, image: { id: image.id }, params: { ...params, ...(t !== null ? { target: t } : {}) } };
  }

  run.addEventListener("click", () => {
    errors.show(null);
    try {
      const specs = [...CHOSEN].filter((k) => forms[k]).map((kind) => spec(kind, forms[kind].read()));
      if (!specs.length) throw { code: "no_method", message: "tick at least one method" };
      clear(results);
      for (const s of specs) results.append(attributionCard(s));
      results.firstElementChild?.scrollIntoView({ block: "nearest" });
    } catch (error) {
      errors.show(error);
    }
  });

  compare.addEventListener("click", () => {
    errors.show(null);
    try {
      const s = spec("compare", { methods: [...CHOSEN] });
      clear(results, jobCard("compare: ranked by ROAD", s, { className: "wide", render: async (job, body) => {
        const ranking = await api.artifactJson(job.id, "ranking.json");
        const m = job.result.metrics || {};
        const baseline = job.params.deletion_baseline;
        body.append(h("img", { src: await api.artifact(job.id, "panel.png"), class: "picture", alt: "maps side by side, ranked" }),
          h("p", { class: "notice", title: ROAD_EXPLAINED }, "Ranked by ROAD score (higher is more faithful). Each method is " +
            "also checked against random maps of its own grain, since a coarse map and a pixel map score differently " +
            "even at random; a method that does not beat them is not telling which regions the model uses." +
            (m.random_deletion_auc !== undefined ? ` A random pixel-level map scores deletion AUC ${fmt(m.random_deletion_auc, 3)}` +
              ` and insertion AUC ${fmt(m.random_insertion_auc, 3)}.` : "")),
          table([
            { label: "method", value: (r) => r.method },
            { label: "ROAD score (higher is more faithful)", value: (r) => h("strong", {}, signed(r.road_score)) },
            { label: "random maps, same grain (mean ± sd)", value: (r) => randomLevel(r.road_random_mean, r.road_random_sd) },
            { label: "beats random", value: (r) => beatsBadge(r) },
            { label: `deletion AUC (${FILLED[baseline] || "pixels removed"}; lower is better)`, value: (r) => fmt(r.deletion_auc, 4) },
            { label: "insertion AUC (higher is better)", value: (r) => fmt(r.insertion_auc, 4) },
            { label: "seconds", value: (r) => fmt(r.seconds, 2) },
          ], ranking));
      } }));
    } catch (error) {
      errors.show(error);
    }
  });

  // One method's card: the map as soon as the worker has it, then, when the job ends, its faithfulness.
  // `existing` shows a job submitted before (the Jobs panel's "open"), over `model` and `image` as it read them
  // (image null when it is no longer stored: the map alone).
  function attributionCard(s, { existing = null, model = state.get("model"), image = state.get("image") } = {}) {
    let card = null;
    let shown = null; // the map on screen (a promise): drawn once, from the `artifact` event or, for a cached job, at the end
    let ended = false;

    async function drawMap(jobId, early, source) {
      const map = attributionMap(await api.artifactNpy(jobId, "attribution.npy"));
      const heat = mapCanvas(map.data, map.rows, map.cols, { map: "inferno", alpha: true, lo: 0, hi: 1 });
      if (image) early.prepend(blend(inputCanvas(image.element, model), heat, { label: `${s.kind} opacity`, opacity: Number(opacity.value) }));
      else early.prepend(h("div", { class: "stack" }, heat), h("p", { class: "notice" }, "(the image it explains has expired: the map alone)"));
      card.dataset.map = source; // "artifact": shown from the event, before the scores; "result": at the end
      card.dataset.mapStatus = card.dataset.status; // the job's status when the map appeared
      if (source === "artifact" && s.params.evaluate !== false && !ended) {
        early.append(h("p", { class: "notice scoring" }, "The map is ready; now scoring how faithful it is (ROAD against " +
          "random maps, then deletion/insertion)…"));
      }
    }
    const showMap = (jobId, early, source) => (shown ??= drawMap(jobId, early, source).catch((error) => {
      shown = null; // the end tries again
      throw error;
    }));

    card = jobCard(s.kind, s, {
      existing,
      onArtifact: (artifact, job, early) => (artifact.name === "attribution.npy" ? showMap(job.id, early, "artifact") : null),
      render: async (job, body, early) => {
        await showMap(job.id, early, "result");
        const m = job.result.metrics || {};
        const cls = m.target ?? job.params.target;
        const known = cls !== null && cls !== undefined;
        const name = known ? `${m.target_label ?? state.label(cls)} (${cls})` : "the top-1 class";
        body.append(h("p", { class: "notice" }, `target: ${known ? name : "top-1"}`));
        if ("road_score" in m || "deletion_auc" in m) body.append(await faithfulness(job, m, name, model));
      },
    });
    card.done.then(() => { // ended in any way: scored, failed or canceled while scoring
      ended = true;
      card.querySelector(".scoring")?.remove();
    });
    return card;
  }

  root.append(
    h("h2", {}, "Attributions"),
    h("p", { class: "intro" }, "Which pixels the model's score for a class depends on, by several methods at once. Each runs as a " +
      "job on a worker; the maps are |attribution| summed over colour channels, scaled to their 99.5th percentile, and " +
      "each appears as soon as it is made. The job then checks how faithful the map is to the model: ROAD removes the " +
      "pixels the map ranks highest (or lowest), fills them in from their neighbours and watches the class's " +
      "probability, and compares the result with random maps of the same grain; deletion and insertion scores follow."),
    h("div", { class: "card" }, choices, h("div", { class: "params" }, target.field, field("blend all maps", opacity)),
      h("div", { class: "actions" }, run, compare), errors),
    results);
  // The Jobs panel's "open": a finished attribution job back in this panel, over the image it explained.
  async function reopen(job) {
    const model = state.get("model")?.id === job.model ? state.get("model") : await api.model(job.model);
    const id = job.inputs?.image?.slice(0, 32);
    let image = state.get("image")?.id === id ? state.get("image") : null;
    if (!image && id) {
      try {
        const url = await api.image(id);
        image = { id, element: await imageFrom(url, `image ${id.slice(0, 8)}`) };
      } catch {
        image = null; // expired, or given inline or from a dataset: drawn without it
      }
    }
    errors.show(null);
    clear(results, attributionCard(specOf(job), { existing: job, model, image }));
    showPanel("attributions");
    results.scrollIntoView({ block: "nearest" });
  }

  state.on("schema", renderChoices);
  state.on("image", () => clear(results));
  state.on("model", () => clear(results));
  state.on("open-job", (job) => state.family(job.kind) === "attribution" && reopen(job).catch((error) => errors.show(error)));
}

// --- faithfulness, in words a first-time reader follows ---------------------------------------------------------
const roadWords = (range = "") => "ROAD (Rong et al. 2022) removes the pixels a map ranks highest (MoRF: most " +
  `relevant first) or lowest (LeRF: least relevant first)${range}, fills each removed pixel in from its neighbours ` +
  "with a little noise so the picture stays natural, and watches the model's probability for the class. A faithful " +
  "map makes the probability fall when its top pixels go and stay up when its bottom pixels go; the score is the " +
  "mean gap between the two curves, halved (higher is more faithful; it can be negative).";
const ROAD_EXPLAINED = roadWords();
const RANDOM_EXPLAINED = "Random maps at the same grain (a 7×7 grid for a Grad-CAM, single pixels for a gradient map, " +
  "superpixels for Kernel SHAP) are scored the same way, because the grain alone changes the score: a map is more " +
  "faithful than chance only when its score is above theirs by more than two standard deviations.";
const FILLED = { zeros: "pixels set to 0 in the model's input", black: "pixels set to black",
  mean: "pixels set to the image's mean colour", blur: "pixels blurred" };
const STARTED = { zeros: "pixels restored into an all-0 input", black: "pixels restored into a black image",
  mean: "pixels restored into an image of its mean colour", blur: "pixels restored into a blurred copy" };
const MORF_COLOUR = "#c0392b";
const LERF_COLOUR = "#2b59c3";

const signed = (value, digits = 3) =>
  typeof value === "number" ? `${value < 0 ? "\u2212" : "+"}${Math.abs(value).toFixed(digits)}` : "—";

const randomLevel = (mean, sd) => (typeof mean === "number" ? `${signed(mean)} ± ${fmt(sd ?? 0, 3)}` : "none scored");

// How a score stands against its random control: beats it, below it (by the same two-sd margin), or neither.
function verdict({ road_score: score, road_random_mean: mean, road_random_sd: sd, beats_random: beats }) {
  if (beats === true) return { tone: "good", words: "more faithful than random maps of the same grain" };
  if (beats !== false) return null;
  if (score < mean - 2 * (sd ?? 0)) return { tone: "bad", words: "less faithful than random maps of the same grain" };
  return { tone: "same", words: "not distinguishable from random maps of the same grain" };
}

function beatsBadge(row) {
  const v = verdict(row);
  if (!v) return "—";
  return h("span", { class: `verdict ${v.tone}`, "data-beats-random": String(row.beats_random) },
    { good: "yes", same: "no (within noise)", bad: "no (below)" }[v.tone]);
}

// The grain of the random control, as a person would name it: "7×7", "pixel level", "one value per superpixel".
function grainWords(grain, model) {
  if (grain === "superpixels") return "one value per superpixel";
  if (!Array.isArray(grain)) return null;
  const [rows, cols] = grain;
  return rows === model.input.height && cols === model.input.width ? "pixel level" : `${rows}×${cols}`;
}

// "ROAD score +0.124 — more faithful than random maps of the same grain (7×7): random +0.031 ± 0.018 (4 maps)".
function roadSentence(m, road, model) {
  const v = verdict(m);
  const grain = road ? grainWords(road.random?.grain, model) : null;
  const maps = road?.random?.maps;
  const control = v
    ? [" — ", h("span", { class: `verdict ${v.tone}` }, v.words), grain ? ` (${grain})` : "",
      `: random ${randomLevel(m.road_random_mean, m.road_random_sd)}${maps ? ` (${maps} map${maps === 1 ? "" : "s"})` : ""}`]
    : " — no random maps were scored to compare it with (road_random_maps 0)";
  return h("p", { class: "road", title: `${ROAD_EXPLAINED} ${RANDOM_EXPLAINED}`, "data-beats-random": String(m.beats_random) },
    "ROAD score ", h("strong", {}, signed(m.road_score)), control);
}

function roadExplanation(road) {
  const share = (f) => `${Math.round(f * 100)}%`;
  const range = road?.fractions?.length ? ` (${share(road.fractions[0])} to ${share(road.fractions.at(-1))} of them)` : "";
  return h("details", { class: "explain" }, h("summary", {}, "What does ROAD measure?"),
    h("p", {}, roadWords(range)),
    h("p", {}, RANDOM_EXPLAINED));
}

// MoRF and LeRF: the class's probability against the share of pixels removed; the unchanged image's probability
// (deletion's first point, where nothing is removed yet) as a dashed line to read both against.
function roadChart(table, name) {
  const road = table.road;
  const unchanged = table.fraction?.[0] === 0 ? table.deletion?.[0] : undefined;
  const chart = lineChart([
    { label: "MoRF: most relevant removed first", x: road.fractions, y: road.morf, colour: MORF_COLOUR },
    { label: "LeRF: least relevant removed first", x: road.fractions, y: road.lerf, colour: LERF_COLOUR },
  ], { xLabel: "pixels removed (filled in from neighbours)", yLabel: "probability", xFormat: (x) => `${Math.round(x * 100)}%`,
    reference: unchanged === undefined ? null : { label: "the unchanged image", y: unchanged },
    label: `ROAD curves: probability of ${name} as pixels are removed most relevant first and least relevant first` });
  chart.classList.add("road-chart");
  chart.prepend(h("figcaption", {}, `ROAD: probability of ${name} as pixels are removed`));
  return chart;
}

function deletionLine(m, table, params) {
  const baseline = table?.deletion_baseline ?? params.deletion_baseline;
  const start = table?.insertion_start ?? "blur";
  return h("p", { class: "deletion", title: "Petsiuk et al. 2018: the class's probability as the most-attributed pixels " +
    "are removed (deletion) or restored into a copy with none of them (insertion), area under each curve. Pixels removed " +
    "this way leave a hole of the map's shape, which the model may react to by itself: ROAD above is the fairer test." },
  "Deletion AUC ", h("strong", {}, fmt(m.deletion_auc, 3)), ` (${FILLED[baseline] || `pixels set to ${baseline}`}; lower is better)`,
  " · insertion AUC ", h("strong", {}, fmt(m.insertion_auc, 3)), ` (${STARTED[start] || `from ${start}`}; higher is better)`);
}

// The whole faithfulness block of a finished map: ROAD's sentence, its explanation and curves, then deletion and
// insertion. A map of a layer's unit is not scored (the scores follow a class's probability): its metrics are null.
async function faithfulness(job, m, name, model) {
  const box = h("div", { class: "faithfulness" });
  if (m.road_score === null || (m.road_score === undefined && m.deletion_auc === null)) {
    return clear(box, h("p", {}, "Not scored: ROAD and deletion/insertion follow a class's probability, and this map explains a unit of a layer."));
  }
  const names = (job.result.artifacts || []).map((a) => a.name);
  const table = names.includes("evaluation.json") ? await api.artifactJson(job.id, "evaluation.json") : null;
  if (m.road_score !== undefined) box.append(roadSentence(m, table?.road, model), roadExplanation(table?.road));
  if (table?.road?.morf) box.append(roadChart(table, name));
  if (typeof m.deletion_auc === "number") box.append(deletionLine(m, table, job.params));
  return box;
}
