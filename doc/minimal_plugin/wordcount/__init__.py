"""A minimal DEEPaaS V2 model plugin: the hooks are in :mod:`wordcount.api`."""
