"""``deepaas.model.v2`` as deepaas_like provides it."""
