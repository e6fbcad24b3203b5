// How a front end uses convscope.d.ts (type-checked by tests/clients/test_typescript.py; the README shows it).
import createClient from "openapi-fetch";
import type { components, paths } from "./convscope";

// With openapi-fetch: paths, parameters, bodies and answers are all typed.
const api = createClient<paths>({ baseUrl: "http://127.0.0.1:8000", headers: { Authorization: "Bearer <key>" } });
const { data, error } = await api.POST("/v1/models/{model}/predict", {
  params: { path: { model: "efficientnet-lite0" } }, body: { image: { id: "<image id>" }, top_k: 3 } });
console.log(error ? error.error.message : data.predictions.map((p) => `${p.label}: ${p.probability}`));

// With plain fetch: the schemas as types.
type Job = components["schemas"]["Job"];
const job: Job = await (await fetch("http://127.0.0.1:8000/v1/jobs/<id>", { headers: { Authorization: "Bearer <key>" } })).json();
console.log(job.status, job.progress.step, job.progress.total, job.result?.artifacts.map((artifact) => artifact.url));
