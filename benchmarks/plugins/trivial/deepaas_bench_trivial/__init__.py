"""A trivial DEEPaaS V2 plugin: predict does almost nothing, so a benchmark measures the server."""
