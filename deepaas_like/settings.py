"""Settings the server runs with: every configuration option declared once, as a field of
:class:`Settings` or :class:`ModelSettings` with its section, oslo.config type, help text and
default. :mod:`deepaas_like.config` turns this table into the command line, the
configuration file's sections and the sample file; ``cmd/`` reads them once and passes
Settings down.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
from collections.abc import Callable
from typing import Any

from oslo_config import cfg

from deepaas_like.model.loading import DEFAULT_NAMESPACE

__all__ = [
    "AUTH_ENV",
    "MLFLOW_ENV",
    "MODEL_ENV",
    "SECTIONS",
    "ModelSettings",
    "Option",
    "Section",
    "Settings",
    "default_database_url",
    "default_model_store",
    "default_results_dir",
    "in_memory_database",
    "model_names",
    "options",
]

#: Models to serve when ``--model-name`` is not given (DEEPaaS's variable).
MODEL_ENV = "DEEPAAS_V2_MODEL"
#: More API keys, comma-separated, beside ``--auth-token``.
AUTH_ENV = "DEEPAAS_LIKE_AUTH_TOKENS"
#: MLflow's own variable for its tracking server, read when ``--mlflow-tracking-uri`` is unset.
MLFLOW_ENV = "MLFLOW_TRACKING_URI"


def default_database_url() -> str:
    """A SQLite file in the per-user state directory (``$XDG_STATE_HOME`` or ``~/.local/state``)."""
    return "sqlite+aiosqlite:///" + os.path.join(_state_dir(), "jobs.sqlite")


def _state_dir() -> str:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "deepaas_like")


def default_results_dir(database_url: str) -> str:
    """Where binary job results are kept when ``results-dir`` is unset: a ``job-results``
    folder beside a SQLite database file, else in the per-user state directory.
    """
    return _beside_database(database_url, "job-results")


def default_model_store(database_url: str) -> str:
    """Where model versions are kept when ``model-store`` is unset: a ``model-store`` folder
    beside a SQLite database file, else in the per-user state directory.
    """
    return _beside_database(database_url, "model-store")


def _sqlite_database(database_url: str) -> str | None:
    """The database part of a SQLite URL ("" for ``sqlite://``); None for another backend
    or a URL that does not parse (reported when the database opens)."""
    from sqlalchemy.engine import make_url  # imported here: settings are read before the server's dependencies

    try:
        url = make_url(database_url)
    except Exception:  # noqa: BLE001 - a bad URL is reported when the database opens
        return None
    return (url.database or "") if url.get_backend_name() == "sqlite" else None


def in_memory_database(database_url: str) -> bool:
    """Whether ``database_url`` is a SQLite database in memory, which only the process that
    opens it sees (``sqlite://``, ``sqlite:///:memory:``)."""
    database = _sqlite_database(database_url)
    return database is not None and (database in ("", ":memory:") or "mode=memory" in database)


def _beside_database(database_url: str, folder: str) -> str:
    database = _sqlite_database(database_url)
    if database and database != ":memory:" and not database.startswith("file:"):
        return os.path.join(os.path.dirname(os.path.abspath(database)), folder)
    return os.path.join(_state_dir(), folder)


@dataclasses.dataclass(frozen=True)
class Option:
    """How a :class:`Settings` field is configured: ``kind`` is the oslo.config option class,
    ``name`` the option's name (``--name`` on the command line, ``name`` with underscores
    in a file), ``section`` the name of its :class:`Section`, ``read`` turns the option's
    value into the field's (and raises ``ValueError`` with the reason for a bad one),
    ``extra`` goes to the option (``min``, ``secret``, ``sample_default``).
    """

    kind: type[cfg.Opt]
    name: str
    help: str
    section: str
    read: Callable[[Any], Any] | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Section:
    """A group of options: a ``[name]`` section of the configuration file and a titled
    group of ``--help``. ``help`` says what the options in it are about.
    """

    name: str
    help: str

    def option(
        self,
        kind: type[cfg.Opt],
        name: str,
        default: Any,
        help: str,
        *,
        read: Callable[[Any], Any] | None = None,
        **extra: Any,
    ) -> Any:
        """A :class:`Settings` field configured by the option ``name`` of this section (see
        :class:`Option`); a callable ``default`` is called for each Settings and when the
        options are registered.
        """
        metadata = {"option": Option(kind, name, help, self.name, read, extra)}
        if callable(default):
            return dataclasses.field(default_factory=default, metadata=metadata)
        if isinstance(default, dict):
            return dataclasses.field(default_factory=lambda: dict(default), metadata=metadata)
        return dataclasses.field(default=default, metadata=metadata)


MODELS = Section("models", "Which model plugins are served.")
HTTP = Section("http", "The HTTP server: address, routes, links, limits, shutdown.")
SECURITY = Section("security", "API keys and browser access.")
WORKERS = Section(
    "workers",
    "Where plugin code runs and how each model is served (a [model:NAME] section sets these for model NAME).",
)
JOBS = Section("jobs", "The job database: trainings and asynchronous predictions, shared by instances.")
MODEL_VERSIONS = Section("versions", "Model versions that trainings make, and MLflow tracking.")
RAY = Section("ray", "The Ray cluster, with --executor ray.")
GRPC = Section("grpc", "The gRPC server beside HTTP.")
LOGGING = Section("logging", "Log lines.")
#: Every section, in the order of ``--help`` and of the sample configuration file.
SECTIONS: tuple[Section, ...] = (MODELS, HTTP, SECURITY, WORKERS, JOBS, MODEL_VERSIONS, RAY, GRPC, LOGGING)


def options(settings: type | None = None) -> list[tuple[dataclasses.Field[Any], Option]]:
    """Every field of ``settings`` (default: :class:`Settings`, then :class:`ModelSettings`)
    that an option sets, with its :class:`Option`, in declaration order.
    """
    if settings is None:
        return options(Settings) + options(ModelSettings)
    return [(field, field.metadata["option"]) for field in dataclasses.fields(settings) if "option" in field.metadata]


def _names(values: list[str]) -> tuple[str, ...]:
    """Values split on commas and stripped; empty ones dropped."""
    return tuple(name.strip() for value in values for name in value.split(",") if name.strip())


def model_names(values: list[str]) -> tuple[str, ...]:
    """``--model-name`` values split on commas, else ``$DEEPAAS_V2_MODEL``, else ()."""
    return _names(list(values) or [os.environ.get(MODEL_ENV, "")])


def _tokens(values: list[str]) -> tuple[str, ...]:
    """``--auth-token`` values and the comma-separated ``$DEEPAAS_LIKE_AUTH_TOKENS``, stripped."""
    tokens = [*values, *os.environ.get(AUTH_ENV, "").split(",")]
    return tuple(token.strip() for token in tokens if token.strip())


def _pairs(number: Callable[[str], float]) -> Callable[[dict[str, str]], dict[str, Any]]:
    def read(values: dict[str, str]) -> dict[str, Any]:
        try:
            return {name: number(value) for name, value in (values or {}).items()}
        except ValueError as error:
            raise ValueError(f"takes name:number pairs: {error}") from error

    return read


def _model_store(url: str | None) -> str | None:
    """A ``model-store`` value, refused (``ValueError``) where versions could never load: an
    in-memory filesystem (``memory://``, also in a chain such as ``simplecache::memory://``)
    lives in one process, and a version is saved by a training worker and loaded by others.
    """
    for part in (url or "").split("::"):
        protocol, separator, _ = part.partition("://")
        if separator and protocol.strip().lower() == "memory":
            raise ValueError(
                f"{url!r} is in memory, which each worker process has of its own: the versions a training "
                "worker saves there could never be loaded by another; use a local path or a shared store (s3://...)"
            )
    return url


def _networks(values: list[str]) -> tuple[str, ...]:
    networks = _names(values)
    for network in networks:
        ipaddress.ip_network(network, strict=False)  # ValueError names the bad one
    return networks


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """How one model is served. The options (of the workers, ray and versions sections) set them
    for every model; a ``[model:NAME]`` section of the configuration file sets them for model
    NAME (see :func:`deepaas_like.config.read`). Seconds and milliseconds as the names say.
    """

    workers: int = WORKERS.option(cfg.IntOpt, "workers", 1, "Worker processes for predictions, per model.", min=1)
    train_workers: int = WORKERS.option(
        cfg.IntOpt, "train-workers", 1, "Worker processes per model for trainings (started on first use).", min=1
    )
    gpus: tuple[str, ...] = WORKERS.option(
        cfg.ListOpt, "gpus", (), "GPU ids given to workers round-robin through CUDA_VISIBLE_DEVICES, e.g. 0,1."
    )
    max_batch_size: int = WORKERS.option(
        cfg.IntOpt,
        "max-batch-size",
        8,
        "Most requests grouped into one predict_batch() call, for plugins that have it. 1: no batching.",
        min=1,
    )
    batch_wait_ms: float = WORKERS.option(
        cfg.FloatOpt,
        "batch-wait-ms",
        5.0,
        "Longest a request waits for others to join its batch, in milliseconds.",
        min=0,
    )
    predict_timeout: float = WORKERS.option(
        cfg.FloatOpt,
        "predict-timeout",
        0.0,
        "Seconds a prediction may take; past it the answer is 504 and the worker is replaced. 0: no limit.",
        min=0,
    )
    max_queue: int = WORKERS.option(
        cfg.IntOpt,
        "max-queue",
        256,
        "Most requests waiting for a model's predict workers; more get 503 with Retry-After. 0: no bound.",
        min=0,
    )
    pipeline_depth: int = WORKERS.option(
        cfg.IntOpt,
        "pipeline-depth",
        2,
        "Predictions a predict worker holds at once: the one it runs and those sent to run right after it, "
        "so that it never waits for the server between them. A prediction is queued on a busy worker only "
        "while every worker is busy. 1: one at a time (calls of very different lengths, several workers).",
        min=1,
    )
    worker_memory_limit_mb: int = WORKERS.option(
        cfg.IntOpt,
        "worker-memory-limit",
        0,
        "Address-space limit of each worker process, in MiB (RLIMIT_AS); allocations past it fail. 0: none.",
        min=0,
    )
    max_result_size: int = WORKERS.option(
        cfg.IntOpt,
        "max-result-size",
        0,
        "Largest prediction sent back, in bytes; a larger one is answered 507 (the worker is kept). "
        "Binary results over 1 MiB travel from the worker as files in the upload directory. 0: no limit.",
        min=0,
    )
    worker_threads: int = WORKERS.option(
        cfg.IntOpt,
        "worker-threads",
        0,
        "Threads of the math libraries (OpenMP, MKL, OpenBLAS: torch, numpy) in each worker. "
        "On shared CPUs, 1 avoids threads spin-waiting for each other. 0: as the environment says.",
        min=0,
    )
    warm: bool = WORKERS.option(
        cfg.BoolOpt, "warm", True, "Call each plugin's warm() in every worker before it takes work."
    )
    max_workers: int = WORKERS.option(
        cfg.IntOpt,
        "max-workers",
        0,
        "Autoscaling: most predict workers. A model starts with 'workers'; while requests wait for one, it "
        "gains a worker every scale-up-delay seconds up to this many, and loses one every scale-down-delay "
        "seconds while one idles. 0: no autoscaling.",
        min=0,
    )
    # Where a worker runs on a Ray cluster (--executor ray): what Ray reserves for each.
    ray_num_cpus: float = RAY.option(
        cfg.FloatOpt,
        "ray-num-cpus",
        1.0,
        "With --executor ray: CPUs reserved for each worker (fractions allowed).",
        min=0,
    )
    ray_num_gpus: float = RAY.option(
        cfg.FloatOpt,
        "ray-num-gpus",
        0.0,
        "With --executor ray: GPUs reserved for each worker; fractions share a GPU (0.5: two workers on "
        "one). Ray gives the worker its ids through CUDA_VISIBLE_DEVICES.",
        min=0,
    )
    ray_memory_mb: int = RAY.option(
        cfg.IntOpt,
        "ray-memory",
        0,
        "With --executor ray: memory reserved for each worker, in MiB (Ray places it on a node that has it "
        "free). 0: none reserved.",
        min=0,
    )
    ray_resources: dict[str, float] = RAY.option(
        cfg.DictOpt,
        "ray-resources",
        {},
        "With --executor ray: custom resources reserved for each worker, e.g. accelerator_l4:1 (the nodes "
        "declare them: ray start --resources).",
        read=_pairs(float),
    )
    ray_node_labels: dict[str, str] = RAY.option(
        cfg.DictOpt,
        "ray-node-labels",
        {},
        "With --executor ray: labels a node must have to run the workers, e.g. zone:b (the nodes declare "
        "them: ray start --labels zone=b).",
        read=lambda values: dict(values or {}),
    )
    version_workers: int = MODEL_VERSIONS.option(
        cfg.IntOpt,
        "version-workers",
        1,
        "Worker processes of each loaded model version (started on the version's first call).",
        min=1,
    )

    def timeout(self) -> float | None:
        """Seconds a prediction may take, or None for no limit."""
        return self.predict_timeout or None

    def problem(self) -> str | None:
        """What makes these settings inconsistent (named as the options are), or None."""
        if self.max_workers and self.max_workers < self.workers:
            return f"max-workers ({self.max_workers}) must be 0 or at least workers ({self.workers})"
        return None


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the server needs, one field per option (its section in its declaration:
    ``HTTP.option(...)``); defaults are DEEPaaS's where it has the option. Times are in
    seconds unless the name says otherwise, sizes in bytes, 0 means "no limit" where the
    help says so. :meth:`for_model` gives a model's :class:`ModelSettings`.
    """

    listen_ip: str = HTTP.option(cfg.HostAddressOpt, "listen-ip", "127.0.0.1", "IP address the server listens on.")
    listen_port: int = HTTP.option(cfg.PortOpt, "listen-port", 5000, "Port the server listens on.")
    grpc_port: int = GRPC.option(
        cfg.PortOpt,
        "grpc-port",
        0,
        "Port of a gRPC server beside HTTP, on listen-ip, serving the same models, jobs and API keys "
        "(needs the grpc extra: pip install 'deepaas_like[grpc]'). 0: no gRPC.",
    )
    base_path: str = HTTP.option(
        cfg.StrOpt, "base-path", "", "Path prefix of every route, e.g. /deepaas.", read=lambda path: path.rstrip("/")
    )
    predict_endpoint: bool = HTTP.option(
        cfg.BoolOpt, "predict-endpoint", True, "Serve the predict endpoints (402 when off)."
    )
    train_endpoint: bool = HTTP.option(cfg.BoolOpt, "train-endpoint", True, "Serve the train endpoints (402 when off).")
    doc_endpoint: bool = HTTP.option(
        cfg.BoolOpt,
        "doc-endpoint",
        True,
        "Serve /swagger.json, /openapi.json, Swagger UI at /api and the web page at /web/.",
    )
    debug_endpoint: bool = HTTP.option(cfg.BoolOpt, "debug-endpoint", False, "Serve recent log lines at /debug.")
    debug: bool = LOGGING.option(cfg.BoolOpt, "debug", False, "Log at DEBUG and add tracebacks to error responses.")
    client_max_size: int = HTTP.option(
        cfg.IntOpt,
        "client-max-size",
        0,
        "Largest request body accepted, in bytes; larger ones get 413. 0: no limit.",
        min=0,
    )
    # 1000: the default of Werkzeug's max_form_parts (2.2.3, CVE-2023-25577), of Starlette's
    # max_fields and max_files (0.25.0, GHSA-74m5-2c7w-9w3x) and of aiohttp's client_max_fields.
    max_form_parts: int = HTTP.option(
        cfg.IntOpt,
        "max-form-parts",
        1000,
        "Most parts (fields and files) of a multipart/form-data body, and most fields of a urlencoded "
        "one; a body with more gets 413, as soon as the part past the limit arrives. 0: no limit.",
        min=0,
    )
    upload_dir: str | None = HTTP.option(
        cfg.StrOpt,
        "upload-dir",
        None,
        "Directory for uploaded files while a call runs (default: the system temp dir).",
    )
    shutdown_timeout: float = HTTP.option(
        cfg.FloatOpt,
        "shutdown-timeout",
        30.0,
        "Seconds in-flight requests get to finish after SIGTERM or SIGINT; predictions that cannot "
        "finish in time are answered 503 with Retry-After, then the server stops.",
        min=0,
    )
    log_json: bool = LOGGING.option(
        cfg.BoolOpt, "log-json", False, "Write log lines as JSON objects (with the request id)."
    )
    keepalive_timeout: float = HTTP.option(
        cfg.FloatOpt,
        "keepalive-timeout",
        15.0,
        "Seconds an idle connection is kept open; also the most a client may take to send a "
        "request's headers (slow-header clients are disconnected).",
        min=1,
    )
    max_connections: int = HTTP.option(
        cfg.IntOpt,
        "max-connections",
        0,
        "Most open client connections; past it a new connection is answered 503 and closed. "
        "0: the process's file-descriptor limit less 256 (kept for the database, uploads and workers), "
        "at most 10000.",
        min=0,
    )
    event_loop: str = HTTP.option(
        cfg.StrOpt,
        "event-loop",
        "auto",
        "The server's asyncio event loop: uvloop (libuv's, faster), asyncio (the standard library's), "
        "or auto: uvloop where it is installed (a dependency, but for Windows) with one server process, "
        "asyncio's with several (see doc/configuration.rst).",
        choices=("auto", "uvloop", "asyncio"),
    )
    server_processes: int = HTTP.option(
        cfg.IntOpt,
        "server-processes",
        1,
        "Server processes answering on listen-port (and grpc-port), each a whole server with its own "
        "workers (--workers per model in each) and job runner, sharing the job database; more than 1 "
        "uses more cores for HTTP. Not with --executor ray.",
        min=1,
    )
    body_timeout: float = HTTP.option(
        cfg.FloatOpt,
        "body-timeout",
        60.0,
        "Seconds a client may pause while sending a request body before the request is refused with 408. 0: no limit.",
        min=0,
    )
    public_url: str | None = HTTP.option(
        cfg.StrOpt,
        "public-url",
        None,
        "URL clients reach the API root at, e.g. https://models.example.org/deepaas: links and "
        "Location headers are built from it. Default: relative links (never the client's Host header).",
        read=lambda url: url.rstrip("/") if url else None,
    )
    trusted_proxies: tuple[str, ...] = HTTP.option(
        cfg.ListOpt,
        "trusted-proxies",
        (),
        "Addresses or networks of reverse proxies whose X-Forwarded-Proto, X-Forwarded-Host and "
        "X-Forwarded-Prefix headers build links (when public-url is unset), e.g. 127.0.0.1,10.0.0.0/8.",
        read=_networks,
    )
    access_log: bool = LOGGING.option(
        cfg.BoolOpt,
        "access-log",
        True,
        "Log one line per HTTP request (client, request line, status, bytes, seconds, user agent, request id), "
        "in blocks: at most 0.01 s after the request ends.",
    )
    auth_tokens: tuple[str, ...] = SECURITY.option(
        cfg.MultiStrOpt,
        "auth-token",
        (),
        f"API key accepted on predict and train routes (repeat for several; also ${AUTH_ENV}, "
        "comma-separated). Clients send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'. None: no auth.",
        read=_tokens,
        secret=True,
    )
    admin_tokens: tuple[str, ...] = SECURITY.option(
        cfg.MultiStrOpt,
        "admin-token",
        (),
        "API key that sees and cancels every job (repeat for several). Other keys see only "
        "the jobs they created. Accepted wherever auth-token keys are.",
        read=lambda values: tuple(token.strip() for token in values if token.strip()),
        secret=True,
    )
    auth_docs: bool = SECURITY.option(
        cfg.BoolOpt,
        "auth-docs",
        False,
        "Also require the API key for metadata, docs and metrics (health stays open).",
    )
    cors_origins: tuple[str, ...] = SECURITY.option(
        cfg.MultiStrOpt,
        "cors-origin",
        (),
        "Origin allowed to call the API from a browser (repeat; * for any).",
    )
    model_names: tuple[str, ...] = MODELS.option(
        cfg.MultiStrOpt,
        "model-name",
        (),
        f"Model(s) to serve (deepaas-like-cli: to call), by entry-point name; repeat or separate with "
        f"commas. Default: ${MODEL_ENV}, else every installed model (deepaas-like-cli: the only one).",
        read=model_names,
    )
    namespace: str = MODELS.option(
        cfg.StrOpt, "model-namespace", DEFAULT_NAMESPACE, "Entry-point group that plugins are found in."
    )
    model_workers: dict[str, int] = MODELS.option(
        cfg.DictOpt,
        "model-workers",
        {},
        "Deprecated: set workers in a [model:NAME] section instead. Per-model predict workers, e.g. demo:2,other:1.",
        read=_pairs(int),
    )
    model_predict_timeouts: dict[str, float] = MODELS.option(
        cfg.DictOpt,
        "model-predict-timeout",
        {},
        "Deprecated: set predict_timeout in a [model:NAME] section instead. Per-model predict "
        "timeout in seconds, e.g. demo:5,slow:60.",
        read=_pairs(float),
    )
    executor: str = WORKERS.option(
        cfg.StrOpt,
        "executor",
        "process",
        "Where plugin code runs: process (worker processes on this machine) or ray (Ray actors placed on "
        "a Ray cluster; pip install 'deepaas_like[ray]').",
        choices=("process", "ray"),
    )
    ray_address: str = RAY.option(
        cfg.StrOpt,
        "ray-address",
        "",
        "With --executor ray: the cluster. auto (the one 'ray start' runs on this machine), HOST:PORT "
        "(its head's GCS address), ray://HOST:10001 (Ray Client), or empty: a Ray instance of this server's own.",
    )
    ray_connect_timeout: float = RAY.option(
        cfg.FloatOpt,
        "ray-connect-timeout",
        30.0,
        "With --executor ray: seconds to reach the cluster; at start, past it the server does not start.",
        min=1,
    )
    ray_head_timeout: float = RAY.option(
        cfg.FloatOpt,
        "ray-head-timeout",
        10.0,
        "With --executor ray: seconds without an answer from the cluster's head after which the connection "
        "counts as lost: predictions get 503 with Retry-After while the server reconnects.",
        min=1,
    )
    ray_reconnect_interval: float = RAY.option(
        cfg.FloatOpt,
        "ray-reconnect-interval",
        5.0,
        "With --executor ray: seconds between attempts to reconnect to a lost cluster.",
        min=0.1,
    )
    scale_up_delay: float = WORKERS.option(
        cfg.FloatOpt,
        "scale-up-delay",
        5.0,
        "Autoscaling (max-workers): seconds requests must keep waiting for a worker before one is added.",
        min=0,
    )
    scale_down_delay: float = WORKERS.option(
        cfg.FloatOpt,
        "scale-down-delay",
        60.0,
        "Autoscaling (max-workers): seconds a worker must keep idling before one is removed.",
        min=0,
    )
    #: The per-model options as the command line and the sections set them (every model's).
    model: ModelSettings = dataclasses.field(default_factory=lambda: ModelSettings())
    #: Model name -> its settings, where a ``[model:NAME]`` section (or the deprecated
    #: ``model-workers``, ``model-predict-timeout``) names it.
    models: dict[str, ModelSettings] = dataclasses.field(default_factory=dict)
    database_url: str = JOBS.option(
        cfg.StrOpt,
        "database-url",
        default_database_url,
        "SQLAlchemy URL of the job database: sqlite:///PATH (a file, created if missing) or "
        "postgresql://USER:PASSWORD@HOST/DB; the asyncio drivers (aiosqlite, psycopg) are used for them.",
        sample_default="sqlite+aiosqlite:///$XDG_STATE_HOME/deepaas_like/jobs.sqlite",
    )
    instance: str = JOBS.option(
        cfg.StrOpt,
        "instance-name",
        None,
        "Name of this server among those sharing the job database; jobs it was running "
        "when it stopped are reported as interrupted when it starts again. Default: host:port.",
        sample_default="<hostname>:<listen-port>",
    )
    job_poll_interval: float = JOBS.option(
        cfg.FloatOpt,
        "job-poll-interval",
        0.5,
        "Seconds between looks at the database for queued jobs and cancels from other instances.",
        min=0.01,
    )
    job_retention_hours: float = JOBS.option(
        cfg.FloatOpt,
        "job-retention-hours",
        0.0,
        "Finished jobs and their stored results are deleted after this many hours. 0: kept forever.",
        min=0,
    )
    results_dir: str | None = JOBS.option(
        cfg.StrOpt,
        "results-dir",
        None,
        "Directory of the binary results of asynchronous predictions (one file per job, served "
        "streamed, deleted with the job). Default: job-results beside a SQLite database file, else "
        "$XDG_STATE_HOME/deepaas_like/job-results. Instances sharing a database need a shared one.",
        sample_default="<the SQLite database's directory>/job-results",
    )
    idempotency_key_hours: float = JOBS.option(
        cfg.FloatOpt,
        "idempotency-key-hours",
        24.0,
        "Hours during which a POST that creates a job, sent again with the same Idempotency-Key "
        "header by the same API key, returns the first job instead of making another.",
        min=0,
    )
    heartbeat_interval: float = JOBS.option(
        cfg.FloatOpt,
        "heartbeat-interval",
        10.0,
        "Seconds between this instance's heartbeats in the job database.",
        min=0.05,
    )
    heartbeat_expiry: float = JOBS.option(
        cfg.FloatOpt,
        "heartbeat-expiry",
        60.0,
        "Seconds without a heartbeat after which an instance counts as gone: another instance "
        "(or this one restarted under any name) marks the jobs it was running as interrupted. "
        "At least twice heartbeat-interval.",
        min=0.1,
    )

    model_store: str | None = MODEL_VERSIONS.option(
        cfg.StrOpt,
        "model-store",
        None,
        "Where the versions that trainings make are stored, one directory each: a local path or an "
        "fsspec URL (s3://bucket/models, a shared mount). Instances sharing a database need a shared one. "
        "Default: model-store beside a SQLite database file, else $XDG_STATE_HOME/deepaas_like/model-store. "
        "Not memory://: each worker process has a memory of its own.",
        read=_model_store,
        sample_default="<the SQLite database's directory>/model-store",
    )
    max_loaded_versions: int = MODEL_VERSIONS.option(
        cfg.IntOpt,
        "max-loaded-versions",
        2,
        "Most model versions with workers at once on this server; past it the least recently used "
        "idle version is unloaded (its next call loads it again), never a promoted one. 0: no bound.",
        min=0,
    )
    version_load_timeout: float = MODEL_VERSIONS.option(
        cfg.FloatOpt,
        "version-load-timeout",
        120.0,
        "Seconds the first call of a version waits for its workers to start and load it; past it "
        "the answer is 503 with Retry-After (the load goes on).",
        min=0.1,
    )
    mlflow_tracking_uri: str | None = MODEL_VERSIONS.option(
        cfg.StrOpt,
        "mlflow-tracking-uri",
        None,
        f"MLflow tracking server (http://host:5000, sqlite:///mlflow.db, databricks): each training "
        f"becomes an MLflow run. Default: ${MLFLOW_ENV}, else no tracking. Needs deepaas_like[mlflow].",
        read=lambda uri: uri or os.environ.get(MLFLOW_ENV) or None,
    )

    def __post_init__(self) -> None:
        if self.instance is None:  # the option's default: host:port
            object.__setattr__(self, "instance", f"{socket.gethostname()}:{self.listen_port}")

    def endpoint_on(self, kind: str) -> bool:
        """Whether the ``predict`` or ``train`` calls are served (``predict-endpoint``, ``train-endpoint``)."""
        return self.predict_endpoint if kind == "predict" else self.train_endpoint

    def for_model(self, name: str) -> ModelSettings:
        """The settings model ``name`` is served with."""
        return self.models.get(name, self.model)
