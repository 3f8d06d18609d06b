"""Settings the server runs with, read from configuration once in ``cmd/`` and passed down."""

from __future__ import annotations

import dataclasses
import os

from deepaas_like.model.loading import DEFAULT_NAMESPACE


def default_database_url() -> str:
    """A SQLite file in the per-user state directory (``$XDG_STATE_HOME`` or ``~/.local/state``)."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return "sqlite+aiosqlite:///" + os.path.join(state, "deepaas_like", "jobs.sqlite")


def default_results_dir(database_url: str) -> str:
    """Where binary job results are kept when ``results-dir`` is unset: a ``job-results``
    folder beside a SQLite database file, else in the per-user state directory.
    """
    from sqlalchemy.engine import make_url  # imported here: settings are read before the server's dependencies

    try:
        url = make_url(database_url)
        database = url.database if url.get_backend_name() == "sqlite" else None
    except Exception:  # noqa: BLE001 - a bad URL is reported when the database opens
        database = None
    if database and database != ":memory:" and not database.startswith("file:"):
        return os.path.join(os.path.dirname(os.path.abspath(database)), "job-results")
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "deepaas_like", "job-results")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the server needs; defaults are DEEPaaS's where it has the option.

    ``client_max_size`` is in bytes (0: unlimited); ``model_workers`` maps a model name to
    its number of predict workers, overriding ``workers``. ``instance`` names this server
    among those sharing a job database; ``job_poll_interval``, ``predict_timeout`` and
    ``shutdown_timeout`` are in seconds (0: no limit); ``max_queue`` bounds the calls waiting
    per model (0: none); ``max_result_size`` the bytes of a prediction (0: none).
    ``keepalive_timeout`` and ``body_timeout`` are in seconds (0: no limit);
    ``public_url`` is the API root as clients see it (None: relative links);
    ``trusted_proxies`` are addresses or networks whose ``X-Forwarded-*`` headers are honoured.
    ``heartbeat_interval`` and ``heartbeat_expiry`` are in seconds; ``results_dir`` None
    means :func:`default_results_dir`.
    """

    model_names: tuple[str, ...] = ()
    namespace: str = DEFAULT_NAMESPACE
    base_path: str = ""
    predict_endpoint: bool = True
    train_endpoint: bool = True
    doc_endpoint: bool = True
    debug_endpoint: bool = False
    debug: bool = False
    workers: int = 1
    model_workers: dict[str, int] = dataclasses.field(default_factory=dict)
    train_workers: int = 1
    max_batch_size: int = 8
    batch_wait_ms: float = 5.0
    gpus: tuple[str, ...] = ()
    warm: bool = True
    client_max_size: int = 0
    database_url: str = dataclasses.field(default_factory=default_database_url)
    upload_dir: str | None = None
    instance: str = "deepaas_like"
    predict_timeout: float = 0.0
    model_predict_timeouts: dict[str, float] = dataclasses.field(default_factory=dict)
    max_queue: int = 256
    worker_memory_limit_mb: int = 0
    max_result_size: int = 0
    shutdown_timeout: float = 30.0
    worker_threads: int = 0
    auth_tokens: tuple[str, ...] = ()
    admin_tokens: tuple[str, ...] = ()
    auth_docs: bool = False
    cors_origins: tuple[str, ...] = ()
    log_json: bool = False
    job_poll_interval: float = 0.5
    job_retention_hours: float = 0.0
    heartbeat_interval: float = 10.0
    heartbeat_expiry: float = 60.0
    results_dir: str | None = None
    idempotency_key_hours: float = 24.0
    keepalive_timeout: float = 15.0
    body_timeout: float = 60.0
    public_url: str | None = None
    trusted_proxies: tuple[str, ...] = ()

    def workers_for(self, model: str) -> int:
        return self.model_workers.get(model, self.workers)

    def predict_timeout_for(self, model: str) -> float | None:
        """Seconds a prediction of ``model`` may take, or None for no limit."""
        return self.model_predict_timeouts.get(model, self.predict_timeout) or None
