"""All settings, read once from environment variables prefixed `CONVSCOPE_` (and `REDIS_URL`)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the service. docs/configuration.md lists them, generated from this class
    (`python -m scripts.settings_table`): each field's description, and each section's comment, whose
    first clause (up to a colon or full stop) is the section's title."""

    model_config = SettingsConfigDict(env_prefix="CONVSCOPE_", extra="ignore")

    # Redis and this machine's data folder.
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", validation_alias=AliasChoices("CONVSCOPE_REDIS_URL", "REDIS_URL"),
        description="the Redis that holds the queue, job records and results, and uploaded images",
    )
    redis_prefix: str = Field("convscope:", description="prefix of every Redis key this service writes")
    data_dir: Path = Field(Path("var"), description="model and dataset store (`models/blobs/<sha256>.onnx`, "
                           "`models/records/<id>.json`, `datasets/<id>/`) and other files; with `storage_url` set: "
                           "this machine's cache of the bucket's blobs")

    # Storage of models and datasets: a local folder (the default: data_dir) or an S3-compatible bucket shared
    # by every machine (core/stores/storage.py); blobs fetched from it are kept in a bounded local cache.
    storage_url: str = Field("", description="'' (data_dir), a folder, file:///path, or s3://bucket/prefix")
    s3_endpoint_url: str = Field("", description="S3 endpoint (MinIO: http://minio:9000); '' = AWS's own")
    s3_access_key_id: str = Field("", description="S3 access key ('' = the usual AWS credential chain)")
    s3_secret_access_key: SecretStr = Field(SecretStr(""), repr=False, description="S3 secret key, with "
                                            "s3_access_key_id ('' = the usual AWS credential chain)")
    s3_region: str = Field("us-east-1", description="S3 region of the bucket")
    storage_timeout_s: float = Field(10.0, gt=0, description="connect/read timeout of one storage request (s); an "
                                     "unreachable store is 503 `storage_unavailable`")
    blob_cache_bytes: int = Field(20 * 1024**3, gt=0, description="local copies of bucket blobs kept by one machine "
                                  "(LRU; with a local storage_url nothing is copied)")

    # Inputs (bytes, pixels).
    max_image_bytes: int = Field(20 * 1024 * 1024, gt=0, description="largest image file accepted; larger → 413")
    max_image_pixels: int = Field(40_000_000, gt=0, description="width × height above which an image is refused "
                                  "(413, checked before decoding)")
    max_resized_pixels: int = Field(2048 * 2048, gt=0, description="width × height an image may become in "
                                    "preprocessing (only the window the crop keeps is resized); more → 422 "
                                    "`image_too_large_after_resize`")
    max_body_bytes: int = Field(64 * 1024 * 1024, gt=0, description="largest body of a job submission or a forward "
                                "view (JSON or multipart); larger → 413")
    image_ttl_s: int = Field(7 * 24 * 3600, gt=0, description="how long uploaded images are kept in Redis")
    image_lease_s: float = Field(10, ge=0, description="how long an API process, having found an image in Redis, "
                                 "trusts that it is still there (never past the TTL it read), instead of asking Redis "
                                 "on every forward view of that image; 0: every time. Only an image Redis loses "
                                 "early (evicted, flushed) is answered for up to this long after")

    # Datasets (POST /v1/datasets): archive limits end the upload with 413 before the bytes are produced.
    max_dataset_upload_bytes: int = Field(1024 * 1024 * 1024, gt=0, description="request body of a dataset upload")
    max_dataset_images: int = Field(10_000, gt=0, description="images kept per dataset; more → 413")
    max_archive_members: int = Field(20_000, gt=0, description="entries in an archive (or files parts); more → 413")
    max_dataset_bytes: int = Field(2 * 1024 * 1024 * 1024, gt=0, description="total uncompressed bytes of an upload")
    max_compression_ratio: float = Field(100.0, gt=1, description="uncompressed ÷ compressed above this → 413 "
                                                                   "(judged once past 1 MiB uncompressed)")
    dataset_ttl_s: int = Field(7 * 24 * 3600, gt=0, description="how long datasets are kept on disk")
    max_datasets_per_key: int = Field(100, gt=0, description="datasets one key may hold at once; more → 429")
    dataset_batch: int = Field(16, ge=1, le=512, description="images per ONNX Runtime call in dataset kinds")

    # ONNX Runtime.
    ort_intra_threads: int = Field(0, ge=0, description="intra-op threads of the API's sessions (0: the cores the "
                                   "process may use); workers' sessions use worker_torch_threads")
    ort_inter_threads: int = Field(1, ge=0, description="inter-op threads of the API's ONNX Runtime sessions")
    ort_allow_spinning: bool = Field(False, description="let the API's idle ONNX Runtime pool threads spin for work "
                                     "(lower latency on an otherwise idle machine; steals cores from the API's Python "
                                     "and everything else on a busy or shared one)")
    ort_spin_alone: bool = Field(True, description="build the API's forward-view sessions twice on a CPU, the twin's "
                                 "pool threads spinning between ops: a forward run with no other run in flight or "
                                 "waiting and no other thread runnable on the machine takes the twin (lower latency "
                                 "alone); other runs take the session that sleeps (no core taken from another run "
                                 "or process); they weigh twice in session_cache_bytes")
    ort_providers: str = Field("auto", description="'auto' (CUDA when a GPU is present), or a comma list")
    occlusion_batch: int = Field(32, gt=0, description="perturbed copies per ONNX Runtime call: occlusion, and in "
                                 "workers the deletion/insertion scores, RISE and Kernel SHAP (one progress step each)")
    max_occlusion_positions: int = Field(4096, gt=0, description="patch positions of one occlusion request; more "
                                         "→ 422")
    forward_batch_max: int = Field(32, ge=1, le=1024, description="images per batched ONNX Runtime run of the forward "
                                   "views (requests for the same model and layer that arrive together); 1: no batching")
    forward_batch_tune: bool = Field(True, description="measure, the first time a session runs a batch, the batch "
                                     "size up to forward_batch_max that costs least per image on this machine, and "
                                     "run at most that many images at once (GPU: large batches; a small CPU: 1 or 2)")
    forward_batch_instances: int = Field(0, ge=0, le=256, description="forward runs (batches) the API lets go at "
                                         "once, over all models and layers (0: one per core the process may use; "
                                         "runs of a session share its intra-op threads)")
    forward_batch_wait_ms: float = Field(0.0, ge=0, le=50, description="how long a batch that is not full waits for "
                                         "more requests (ms); 0: it runs as soon as the previous batch is done")
    session_cache_bytes: int = Field(2 * 1024**3, gt=0, description="ONNX Runtime sessions the API keeps (estimated "
                                     "bytes; least recently used go first, probe sessions before plain ones)")
    warm_sessions: int = Field(8, ge=0, le=64, description="sessions used most recently (by any API process; a list "
                               "in Redis) that the API builds and measures in the background after start, each only "
                               "when it fits session_cache_bytes; the built-in model's is always warmed before "
                               "/readyz says ready; 0: that one only")

    # Uploaded models (bytes, opsets, nodes, pixels, elements) and their sandboxed analysis.
    max_model_bytes: int = Field(600 * 1024 * 1024, gt=0, description="largest ONNX file accepted (413 above, counted "
                                 "while the body streams in)")
    model_min_opset: int = Field(7, ge=1, description="oldest default-domain opset accepted; older → 422")
    model_max_opset: int = Field(22, ge=1, description="newest default-domain opset accepted; newer → 422")
    max_model_nodes: int = Field(5000, gt=0, description="nodes in the graph, subgraphs included; more → 422")
    max_model_input_pixels: int = Field(2048 * 2048, gt=0, description="H × W of a model's input; more → 422")
    max_model_constant_elements: int = Field(64 * 1024 * 1024, gt=0,
                                             description="elements a constant-shaped `ConstantOfShape`, "
                                             "`Expand` or `Tile` may make; more → 422")
    max_model_gflops: float = Field(200.0, gt=0, description="GFLOPs one image may cost a model at its input size "
                                    "(counted from the graph's shapes; EfficientNet-Lite0 0.8, ResNet-50 8); more → "
                                    "422 `model_too_expensive`")
    max_model_activation_bytes: int = Field(2 * 1024**3, gt=0, description="bytes of all the tensors a model computes "
                                            "for one image at its input size; more → 422 `model_too_expensive`")
    probe_memory_bytes: int = Field(8 * 1024 ** 3, gt=0, description="address-space cap (`RLIMIT_AS`) of the "
                                    "process that analyses an upload")
    probe_time_limit_s: float = Field(180.0, gt=0, description="wall-clock limit of one model analysis; "
                                      "over it → 422 `analysis_timeout`")
    probe_threads: int = Field(1, ge=1, description="CPU threads of the analysis process (ORT and torch)")
    max_concurrent_uploads: int = Field(1, gt=0, description="model analyses at once; more get 429 with "
                                        "Retry-After")
    max_labels_bytes: int = Field(2 * 1024 * 1024, gt=0, description="size of a labels file")

    # Load shedding.
    max_concurrent_requests: int = Field(0, ge=0, description="forward views running at once; more wait in line "
                                         "(0: as many as the forward runs that go at once, one per core; more let "
                                         "batches form across requests, at the cost of threads that wait for their "
                                         "batch and take the interpreter from the running ones: bench/admission.py)")
    max_queued_requests: int = Field(64, ge=0, description="forward views waiting for a place, first come first "
                                     "served; more get 503 `busy` with Retry-After")
    max_queue_wait_ms: float = Field(2000, gt=0, description="the longest a forward view waits for a place before "
                                     "it gets 503 `busy` with Retry-After (ms)")
    forward_time_limit_s: float = Field(30.0, gt=0, description="the longest a forward view's ONNX Runtime runs may "
                                        "take together (s); they are then stopped (between two ops) and the request "
                                        "gets 503 `forward_timeout` with Retry-After")

    # Per-key limits on uploaded models.
    max_models_per_key: int = Field(20, gt=0, description="uploaded models one key may hold; more → 429")
    max_model_bytes_per_key: int = Field(2 * 1024**3, gt=0, description="bytes of models one key may hold; more → 413")

    # Per-key quotas and fairness: what one key may hold and use of what every key shares (service/tenants.py,
    # core/stores/usage.py). The byte quotas keep one key to about an eighth of the compose file's 4 GB Redis.
    quota_image_bytes: int = Field(512 * 1024**2, gt=0, description="bytes of uploaded images (and their cached "
                                   "previews) one key may hold in Redis; more → 429 `quota_exceeded`")
    quota_job_bytes: int = Field(512 * 1024**2, gt=0, description="bytes of job inputs and artifacts one key may "
                                 "hold in Redis; a submission while they are over → 429 `quota_exceeded`")
    max_dataset_bytes_per_key: int = Field(8 * 1024**3, gt=0, description="bytes of dataset images one key may "
                                           "store; an upload that would pass it → 429 `quota_exceeded`")
    max_holds_per_key: int = Field(16, gt=0, description="event streams and `?wait=` holds one key may have open "
                                   "at once in one API process (each holds a Redis connection); more → 429 "
                                   "`too_many_holds` with Retry-After")
    rate_limit_per_s: float = Field(100.0, ge=0, description="requests per second one key may make, on average "
                                    "(a token bucket in Redis shared by every API process); more → 429 "
                                    "`rate_limited` with Retry-After; 0: no limit. With no API keys: no limit")
    rate_limit_burst: int = Field(400, gt=0, description="requests one key may make at once above the rate")
    forward_share_per_key: int = Field(0, ge=0, description="forward views one key runs at once while other keys "
                                       "have some in flight (0: the forward runs that go at once, one per core, split "
                                       "evenly among those keys, at least one each); a key alone runs as many as "
                                       "max_concurrent_requests lets in")
    forward_share_linger_ms: float = Field(100.0, ge=0, le=5000, description="how long a key counts as in flight "
                                           "after its last forward view ended (ms), so that a client sending one "
                                           "request after another keeps its share between two of them")
    forward_beyond_share_nice: int = Field(10, ge=0, le=19, description="CPU niceness of the threads that run a "
                                           "forward view let in beyond its key's share (it waited for its key's own "
                                           "views while other keys had some in flight): the other keys' views get the "
                                           "cores first, a flood gets what they leave (Linux; 0: no such threads, "
                                           "every view runs at the API's priority)")
    max_concurrent_previews: int = Field(2, gt=0, description="image previews (`GET /v1/images/{id}`) each API "
                                         "process encodes at once (each is then cached with its image); more wait")
    max_concurrent_dataset_decodes: int = Field(1, gt=0, description="dataset uploads each API process decodes at "
                                                "once, in a worker thread; more wait")

    # API keys: with none configured the service is open, on 127.0.0.1 only (service/auth.py).
    api_keys: str = Field("", description="comma-separated `tenant:key` or bare keys; every `/v1` call then needs "
                          "`Authorization: Bearer <key>` (all but the public `GET /v1/auth`)", repr=False)
    api_keys_file: Path | None = Field(None, description="file with one `tenant:key` or key per line")
    operator_tenants: str = Field("", description="comma-separated tenants (of the API keys) that may delete models "
                                  "uploaded while the service was open, which belong to no key")
    metrics_token: SecretStr | None = Field(None, min_length=16, repr=False, description="when set, `/metrics` "
                                            "answers only `Authorization: Bearer <token>` (it names worker hosts and "
                                            "the storage URL); unset: public, for a scraper on a private network")
    allowed_hosts: str = Field("localhost,127.0.0.1,::1", description="with no API keys (open mode): the `Host` "
                               "names answered (others get 400 `bad_host`, against DNS rebinding), and state-changing "
                               "requests from a page of another origin than these or `cors_origins` are refused "
                               "(403 `foreign_origin`)")

    # Browser clients (service/cors.py, service/events_token.py).
    cors_origins: str = Field("", description="comma-separated origins (`https://host:port`) answered with CORS "
                              "headers; none by default; `*` (any) is refused while API keys are configured")
    events_token_ttl_s: int = Field(600, gt=0, le=24 * 3600, description="how long a Job's `events_token` opens "
                                    "its event stream (s)")
    events_token_secret: SecretStr | None = Field(None, min_length=32, repr=False, description="HMAC key of events "
                                                  "tokens; unset: a random key kept in Redis, shared by every API process")

    # Jobs (RQ queue on the same Redis) and their results.
    job_queue: str = Field("convscope", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="RQ queue name (the API and the "
                           "workers must agree)")
    queue_max_length: int = Field(1000, ge=0, description="jobs one key may have waiting in its queue (each key has "
                                  "its own, served in turn); more → 429 `queue_full`")
    max_running_jobs_per_key: int = Field(0, ge=0, description="jobs of one key that run at once on all the workers "
                                          "together (0: no cap; the workers already take the keys' queues in turn); a "
                                          "key at its cap waits while other keys' jobs run, even with workers idle. "
                                          "Checked before each dequeue: workers taking at the same moment may each "
                                          "start one more")
    queue_retry_after_s: int = Field(5, gt=0, description="Retry-After (s) sent with a 429 for a full queue")
    artifact_ttl_s: int = Field(24 * 3600, gt=0, description="how long job records, results and artifacts are kept")
    job_time_limit_scale: float = Field(1.0, gt=0, description="multiplies every kind's time limit (slow machines: > 1)")
    jobs_listed_max: int = Field(10_000, gt=0, description="newest jobs kept in each caller's job list")

    # Workers: their liveness and resources; a dead worker's job ends (or is re-queued) within
    # worker_heartbeat_ttl_s + job_monitor_interval_s seconds.
    worker_heartbeat_s: float = Field(1.0, gt=0, description="how often a worker says it is alive (s)")
    worker_heartbeat_ttl_s: int = Field(6, ge=2, description="a worker silent this long (s) is dead")
    job_monitor_interval_s: float = Field(2.0, gt=0, description="how often API and workers look for lost jobs (s)")
    worker_nice: int = Field(19, ge=0, le=19, description="CPU niceness a worker takes at start (`os.nice`): jobs "
                             "are background work, so on a machine that also runs the API (scripts/run.sh, the "
                             "compose file) every key's forward views go before a flood of jobs (bench/tenants.py); "
                             "the most a process can yield, below even the views let in beyond their key's share "
                             "(forward_beyond_share_nice); 0 gives jobs the API's priority; alone on a machine it "
                             "changes nothing")
    worker_torch_threads: int = Field(1, ge=1, description="torch (and ONNX Runtime) intra-op threads per "
                                      "worker process; keep the API's and the workers' threads ≤ cores")
    worker_cached_networks: int = Field(4, ge=1, description="models each worker keeps loaded (LRU)")
    worker_network_cache_bytes: int = Field(4 * 1024**3, gt=0, description="bytes of torch networks (parameters and "
                                            "buffers) a worker keeps loaded (LRU)")
    worker_session_cache_bytes: int = Field(1024**3, gt=0, description="ONNX Runtime sessions a worker keeps "
                                            "(estimated bytes, LRU: scores, RISE, Kernel SHAP, dataset kinds)")
    worker_warm_up: bool = Field(True, description="compile ROAD's imputation and UMAP's numba kernels in a "
                                 "background thread when a worker starts (loaded from numba's cache after the "
                                 "first time on a machine); off: the first scored map and the first `umap` job "
                                 "compile them")
    attribution_batch: int = Field(4, ge=1, le=1024, description="images per forward/backward pass in SmoothGrad and IG "
                                   "(small on a CPU, so that progress comes about every second)")
    atlas_batch: int = Field(16, ge=1, le=256, description="icons an atlas optimises at once on the CPU when its params "
                             "do not say (on a GPU: as many as half its free memory holds, up to 8 × this)")

    # Logging: JSON lines, each with a `request_id` (also returned as `X-Request-ID`).
    log_level: str = Field("INFO", description="the lowest level logged (DEBUG, INFO, WARNING, ERROR)")

    # Where the API listens.
    host: str = Field("127.0.0.1", description="address `convscope serve` binds to; with no API keys "
                      "configured it binds to 127.0.0.1 whatever this says")
    port: int = Field(8000, description="port `convscope serve` listens on")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, validated once."""
    return Settings()
