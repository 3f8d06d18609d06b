"""The process server: what runs the aiohttp application as one or several server processes.

Only the console scripts use it; ``deepaas_like.api`` builds the application and knows
nothing of processes.

- :mod:`~deepaas_like.cmd.process_server.listening`: the listening socket, a bound on open
  connections, ``SO_REUSEPORT`` for several processes on one port.
- :mod:`~deepaas_like.cmd.process_server.access_log`: one line per request, logged in blocks.
- :mod:`~deepaas_like.cmd.process_server.supervisor`: forks the server processes, restarts
  one that dies, stops them all.
- :mod:`~deepaas_like.cmd.process_server.metrics`: the processes' metrics added up.
"""

from __future__ import annotations

__all__: list[str] = []
