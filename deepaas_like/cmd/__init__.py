"""Console scripts: ``deepaas-like-run`` (server) and ``deepaas-like-cli`` (one-shot calls)."""
