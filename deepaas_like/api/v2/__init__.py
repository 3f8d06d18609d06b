"""DEEPaaS V2 compatible routes."""
