"""Every configuration option (oslo.config), registered in one place.

Option names and defaults follow DEEPaaS 2.6 where it has the option.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import socket

from oslo_config import cfg

from deepaas_like.model.loading import DEFAULT_NAMESPACE
from deepaas_like.settings import Settings, default_database_url

MODEL_ENV = "DEEPAAS_V2_MODEL"
AUTH_ENV = "DEEPAAS_LIKE_AUTH_TOKENS"

server_opts = [
    cfg.HostAddressOpt("listen-ip", default="127.0.0.1", help="IP address the server listens on."),
    cfg.PortOpt("listen-port", default=5000, help="Port the server listens on."),
    cfg.StrOpt("base-path", default="", help="Path prefix of every route, e.g. /deepaas."),
    cfg.BoolOpt("predict-endpoint", default=True, help="Serve the predict endpoints (402 when off)."),
    cfg.BoolOpt("train-endpoint", default=True, help="Serve the train endpoints (402 when off)."),
    cfg.BoolOpt("doc-endpoint", default=True, help="Serve /swagger.json, /openapi.json and Swagger UI at /api."),
    cfg.BoolOpt("debug-endpoint", default=False, help="Serve recent log lines at /debug."),
    cfg.BoolOpt("debug", default=False, help="Log at DEBUG and add tracebacks to error responses."),
    cfg.IntOpt(
        "client-max-size",
        default=0,
        min=0,
        help="Largest request body accepted, in bytes; larger ones get 413. 0: no limit.",
    ),
    cfg.StrOpt("upload-dir", help="Directory for uploaded files while a call runs (default: the system temp dir)."),
    cfg.FloatOpt(
        "shutdown-timeout",
        default=30.0,
        min=0,
        help="Seconds in-flight requests get to finish after SIGTERM or SIGINT; predictions that cannot "
        "finish in time are answered 503 with Retry-After, then the server stops.",
    ),
    cfg.BoolOpt("log-json", default=False, help="Write log lines as JSON objects (with the request id)."),
    cfg.FloatOpt(
        "keepalive-timeout",
        default=15.0,
        min=1,
        help="Seconds an idle connection is kept open; also the most a client may take to send a "
        "request's headers (slow-header clients are disconnected).",
    ),
    cfg.IntOpt(
        "max-connections",
        default=0,
        min=0,
        help="Most open client connections; past it a new connection is answered 503 and closed. "
        "0: the process's file-descriptor limit less 256 (kept for the database, uploads and workers), "
        "at most 10000.",
    ),
    cfg.FloatOpt(
        "body-timeout",
        default=60.0,
        min=0,
        help="Seconds a client may pause while sending a request body before the request is refused "
        "with 408. 0: no limit.",
    ),
    cfg.StrOpt(
        "public-url",
        help="URL clients reach the API root at, e.g. https://models.example.org/deepaas: links and "
        "Location headers are built from it. Default: relative links (never the client's Host header).",
    ),
    cfg.ListOpt(
        "trusted-proxies",
        default=[],
        help="Addresses or networks of reverse proxies whose X-Forwarded-Proto, X-Forwarded-Host and "
        "X-Forwarded-Prefix headers build links (when public-url is unset), e.g. 127.0.0.1,10.0.0.0/8.",
    ),
    cfg.BoolOpt("access-log", default=True, help="Log one line per HTTP request (client, request line, status, "
                "bytes, seconds, user agent, request id)."),
]

security_opts = [
    cfg.MultiStrOpt(
        "auth-token",
        default=[],
        secret=True,
        help=f"API key accepted on predict and train routes (repeat for several; also ${AUTH_ENV}, "
        "comma-separated). Clients send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'. None: no auth.",
    ),
    cfg.MultiStrOpt(
        "admin-token",
        default=[],
        secret=True,
        help="API key that sees and cancels every job (repeat for several). Other keys see only "
        "the jobs they created. Accepted wherever auth-token keys are.",
    ),
    cfg.BoolOpt("auth-docs", default=False, help="Also require the API key for metadata, docs and metrics (health stays open)."),
    cfg.MultiStrOpt("cors-origin", default=[], help="Origin allowed to call the API from a browser (repeat; * for any)."),
]

model_opts = [
    cfg.MultiStrOpt(
        "model-name",
        default=[],
        help=f"Model(s) to serve, by entry-point name; repeat or separate with commas. "
        f"Default: ${MODEL_ENV}, else every installed model.",
    ),
    cfg.StrOpt("model-namespace", default=DEFAULT_NAMESPACE, help="Entry-point group that plugins are found in."),
    cfg.IntOpt("workers", default=1, min=1, help="Worker processes per model for predictions."),
    cfg.DictOpt("model-workers", default={}, help="Per-model predict workers, e.g. demo:2,other:1; overrides workers."),
    cfg.IntOpt("train-workers", default=1, min=1, help="Worker processes per model for trainings (started on first use)."),
    cfg.ListOpt("gpus", default=[], help="GPU ids given to workers round-robin through CUDA_VISIBLE_DEVICES, e.g. 0,1."),
    cfg.IntOpt(
        "max-batch-size",
        default=8,
        min=1,
        help="Most requests grouped into one predict_batch() call, for plugins that have it. 1: no batching.",
    ),
    cfg.FloatOpt(
        "batch-wait-ms",
        default=5.0,
        min=0,
        help="Longest a request waits for others to join its batch, in milliseconds.",
    ),
    cfg.FloatOpt(
        "predict-timeout",
        default=0,
        min=0,
        help="Seconds a prediction may take; past it the answer is 504 and the worker is replaced. 0: no limit.",
    ),
    cfg.DictOpt("model-predict-timeout", default={}, help="Per-model predict timeout in seconds, e.g. demo:5,slow:60."),
    cfg.IntOpt(
        "max-queue",
        default=256,
        min=0,
        help="Most requests waiting for a model's predict workers; more get 503 with Retry-After. 0: no bound.",
    ),
    cfg.IntOpt(
        "worker-memory-limit",
        default=0,
        min=0,
        help="Address-space limit of each worker process, in MiB (RLIMIT_AS); allocations past it fail. 0: none.",
    ),
    cfg.IntOpt(
        "max-result-size",
        default=0,
        min=0,
        help="Largest prediction sent back, in bytes; a larger one is answered 507 (the worker is kept). "
        "Binary results over 1 MiB travel from the worker as files in the upload directory. 0: no limit.",
    ),
    cfg.IntOpt(
        "worker-threads",
        default=0,
        min=0,
        help="Threads of the math libraries (OpenMP, MKL, OpenBLAS: torch, numpy) in each worker. "
        "On shared CPUs, 1 avoids threads spin-waiting for each other. 0: as the environment says.",
    ),
    cfg.BoolOpt("warm", default=True, help="Call each plugin's warm() in every worker before it takes work."),
]

jobs_opts = [
    cfg.StrOpt(
        "database-url",
        default=default_database_url(),
        sample_default="sqlite+aiosqlite:///$XDG_STATE_HOME/deepaas_like/jobs.sqlite",
        help="SQLAlchemy URL of the job database: sqlite:///PATH (a file, created if missing) or "
        "postgresql://USER:PASSWORD@HOST/DB; the asyncio drivers (aiosqlite, psycopg) are used for them.",
    ),
    cfg.StrOpt(
        "instance-name",
        sample_default="<hostname>:<listen-port>",
        help="Name of this server among those sharing the job database; jobs it was running "
        "when it stopped are reported as interrupted when it starts again. Default: host:port.",
    ),
    cfg.FloatOpt(
        "job-poll-interval",
        default=0.5,
        min=0.01,
        help="Seconds between looks at the database for queued jobs and cancels from other instances.",
    ),
    cfg.FloatOpt(
        "job-retention-hours",
        default=0,
        min=0,
        help="Finished jobs and their stored results are deleted after this many hours. 0: kept forever.",
    ),
    cfg.StrOpt(
        "results-dir",
        sample_default="<the SQLite database's directory>/job-results",
        help="Directory of the binary results of asynchronous predictions (one file per job, served "
        "streamed, deleted with the job). Default: job-results beside a SQLite database file, else "
        "$XDG_STATE_HOME/deepaas_like/job-results. Instances sharing a database need a shared one.",
    ),
    cfg.FloatOpt(
        "idempotency-key-hours",
        default=24.0,
        min=0,
        help="Hours during which a POST that creates a job, sent again with the same Idempotency-Key "
        "header by the same API key, returns the first job instead of making another.",
    ),
    cfg.FloatOpt(
        "heartbeat-interval",
        default=10.0,
        min=0.05,
        help="Seconds between this instance's heartbeats in the job database.",
    ),
    cfg.FloatOpt(
        "heartbeat-expiry",
        default=60.0,
        min=0.1,
        help="Seconds without a heartbeat after which an instance counts as gone: another instance "
        "(or this one restarted under any name) marks the jobs it was running as interrupted. "
        "At least twice heartbeat-interval.",
    ),
]

ALL_OPTS = server_opts + security_opts + model_opts + jobs_opts


EPILOG = (
    "Every option can also be set in a file given with --config-file (see etc/deepaas_like.conf.sample). "
    "Trainings and asynchronous predictions are kept in the job database (--database-url; default: "
    f"{default_database_url()})."
)


def register(conf: cfg.ConfigOpts, show_defaults: bool = False) -> None:
    """Register every option as a command-line option of ``conf`` (DEFAULT group);
    ``show_defaults`` adds each option's default to its ``--help`` text.
    """
    conf.register_cli_opts([_with_default(opt) for opt in ALL_OPTS] if show_defaults else ALL_OPTS)


def _with_default(opt: cfg.Opt) -> cfg.Opt:
    default = opt.default
    if default in (None, "", [], {}) or isinstance(opt, cfg.BoolOpt):
        shown = {True: "on", False: "off"}.get(default) if isinstance(opt, cfg.BoolOpt) else None
    else:
        shown = ",".join(map(str, default)) if isinstance(default, list) else str(default)
    if shown is None:
        return opt
    described = copy.deepcopy(opt)
    described.help = f"{opt.help} Default: {shown}."
    return described


def model_names(values: list[str]) -> tuple[str, ...]:
    """``--model-name`` values split on commas, else ``$DEEPAAS_V2_MODEL``, else ()."""
    values = list(values) or [os.environ.get(MODEL_ENV, "")]
    return tuple(name.strip() for value in values for name in value.split(",") if name.strip())


def settings(conf: cfg.ConfigOpts) -> Settings:
    """The :class:`Settings` the parsed configuration describes."""
    try:
        model_workers = {name: int(count) for name, count in (conf.model_workers or {}).items()}
        timeouts = {name: float(seconds) for name, seconds in (conf.model_predict_timeout or {}).items()}
    except ValueError as error:
        raise cfg.Error(f"model-workers and model-predict-timeout take name:number pairs: {error}") from error
    if conf.heartbeat_expiry < 2 * conf.heartbeat_interval:
        raise cfg.Error(
            f"heartbeat-expiry ({conf.heartbeat_expiry:g} s) must be at least twice heartbeat-interval "
            f"({conf.heartbeat_interval:g} s): one late heartbeat must not make an instance count as gone"
        )
    tokens = [*conf.auth_token, *os.environ.get(AUTH_ENV, "").split(",")]
    for proxy in conf.trusted_proxies:
        try:
            ipaddress.ip_network(proxy.strip(), strict=False)
        except ValueError as error:
            raise cfg.Error(f"trusted-proxies: {error}") from error
    return Settings(
        model_names=model_names(conf.model_name),
        namespace=conf.model_namespace,
        base_path=conf.base_path.rstrip("/"),
        predict_endpoint=conf.predict_endpoint,
        train_endpoint=conf.train_endpoint,
        doc_endpoint=conf.doc_endpoint,
        debug_endpoint=conf.debug_endpoint,
        debug=conf.debug,
        workers=conf.workers,
        model_workers=model_workers,
        train_workers=conf.train_workers,
        max_batch_size=conf.max_batch_size,
        batch_wait_ms=conf.batch_wait_ms,
        gpus=tuple(conf.gpus),
        warm=conf.warm,
        client_max_size=conf.client_max_size,
        database_url=conf.database_url,
        upload_dir=conf.upload_dir,
        instance=conf.instance_name or f"{socket.gethostname()}:{conf.listen_port}",
        job_poll_interval=conf.job_poll_interval,
        job_retention_hours=conf.job_retention_hours,
        heartbeat_interval=conf.heartbeat_interval,
        heartbeat_expiry=conf.heartbeat_expiry,
        results_dir=conf.results_dir,
        idempotency_key_hours=conf.idempotency_key_hours,
        predict_timeout=conf.predict_timeout,
        model_predict_timeouts=timeouts,
        max_queue=conf.max_queue,
        worker_memory_limit_mb=conf.worker_memory_limit,
        max_result_size=conf.max_result_size,
        shutdown_timeout=conf.shutdown_timeout,
        worker_threads=conf.worker_threads,
        auth_tokens=tuple(token.strip() for token in tokens if token.strip()),
        admin_tokens=tuple(token.strip() for token in conf.admin_token if token.strip()),
        auth_docs=conf.auth_docs,
        cors_origins=tuple(conf.cors_origin),
        log_json=conf.log_json,
        keepalive_timeout=conf.keepalive_timeout,
        body_timeout=conf.body_timeout,
        public_url=conf.public_url.rstrip("/") if conf.public_url else None,
        trusted_proxies=tuple(proxy.strip() for proxy in conf.trusted_proxies if proxy.strip()),
    )
