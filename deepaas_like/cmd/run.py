"""``deepaas-like-run``: serve model plugins over HTTP."""

from __future__ import annotations

import logging
import sys

from aiohttp import web
from oslo_config import cfg

import deepaas_like
from deepaas_like import config, logs
from deepaas_like.api.app import create_app
from deepaas_like.exceptions import PluginLoadError

LOG = logging.getLogger("deepaas_like")


def main(argv: list[str] | None = None) -> int:
    """Parse options, start the models' workers, and serve until SIGINT/SIGTERM."""
    conf = cfg.ConfigOpts()
    config.register(conf)
    conf(argv if argv is not None else sys.argv[1:], project="deepaas_like", version=deepaas_like.__version__)
    logs.setup(conf.debug, conf.log_json)
    settings = config.settings(conf)
    app = create_app(settings)
    try:
        # SIGINT and SIGTERM stop accepting, give in-flight requests shutdown-timeout
        # seconds, then run the clean-up: running jobs are marked interrupted, workers stop.
        web.run_app(
            app,
            host=conf.listen_ip,
            port=conf.listen_port,
            print=LOG.info,
            access_log=None,
            shutdown_timeout=conf.shutdown_timeout,
            handler_cancellation=True,  # a client that goes away leaves the queue
        )
    except PluginLoadError as error:
        LOG.error("%s", error.message)
        print(f"deepaas-like-run: {error.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
