"""The HTTP layer: aiohttp handlers that parse, call the model layer and respond."""
