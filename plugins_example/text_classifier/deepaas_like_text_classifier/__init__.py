"""deepaas_like example plugin: text classification on MiniLM sentence embeddings."""
