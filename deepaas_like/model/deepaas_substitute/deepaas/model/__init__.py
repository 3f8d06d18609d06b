"""``deepaas.model`` as deepaas_like provides it."""
