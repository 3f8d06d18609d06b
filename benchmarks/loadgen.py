"""Closed-loop HTTP load: ``wrk`` when installed, else an aiohttp client (this file's ``main``).

Both keep ``concurrency`` keep-alive connections busy with one POST each for ``duration`` s and
report the same :class:`LoadResult`. Run alone (the aiohttp generator)::

    python benchmarks/loadgen.py http://127.0.0.1:5000/v2/models/trivial/predict/ \
        --body n=3 --concurrency 8 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
WRK_SCRIPT = HERE / "wrk_post.lua"
FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class LoadResult:
    """Totals of one load run; latencies in milliseconds, ``rps`` counts 2xx answers only."""

    requests: int  # answered requests, any status
    errors: int  # non-2xx answers plus socket errors and timeouts
    seconds: float
    p50_ms: float
    p99_ms: float
    status_errors: int = 0  # the non-2xx part of ``errors``

    @property
    def rps(self) -> float:
        """Successful (2xx) requests per second."""
        return max(0, self.requests - self.status_errors) / self.seconds if self.seconds else 0.0


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def run(
    url: str, body: str, concurrency: int, duration: int, content_type: str = FORM, timeout: int = 30
) -> LoadResult:
    """Load ``url`` with ``concurrency`` connections for ``duration`` s (wrk, else aiohttp)."""
    if have_wrk():
        return run_wrk(url, body, concurrency, duration, content_type, timeout)
    return run_aiohttp(url, body, concurrency, duration, content_type, timeout)


def run_wrk(
    url: str, body: str, concurrency: int, duration: int, content_type: str = FORM, timeout: int = 30
) -> LoadResult:
    """One wrk run (threads: at most 2, this machine's core count for the client)."""
    threads = max(1, min(2, concurrency, os.cpu_count() or 1))
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{concurrency}",
        f"-d{duration}s",
        f"--timeout={timeout}s",
        "-s",
        str(WRK_SCRIPT),
        url,
    ]
    env = {**os.environ, "WRK_BODY": body, "WRK_CONTENT_TYPE": content_type}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=duration + timeout + 30, check=False)
    line = next((l for l in done.stdout.splitlines() if l.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-800:]} {done.stderr[-800:]}")
    totals = json.loads(line.removeprefix("BENCH_JSON "))
    socket_errors = totals["connect"] + totals["read"] + totals["write"] + totals["timeout"]
    return LoadResult(
        requests=totals["requests"],
        errors=socket_errors + totals["status"],
        seconds=totals["duration_us"] / 1e6,
        p50_ms=totals["p50_us"] / 1000,
        p99_ms=totals["p99_us"] / 1000,
        status_errors=totals["status"],
    )


def run_aiohttp(
    url: str, body: str | bytes, concurrency: int, duration: int, content_type: str = FORM, timeout: int = 30
) -> LoadResult:
    """The aiohttp generator in a process of its own, so it does not share our event loop.
    A ``bytes`` body (binary, e.g. a multipart upload) travels to it in a file."""
    with tempfile.NamedTemporaryFile(suffix=".body") as body_file:
        if isinstance(body, bytes):
            body_file.write(body)
            body_file.flush()
        where = ["--body-file", body_file.name] if isinstance(body, bytes) else ["--body", body]
        return _run_aiohttp(url, where, concurrency, duration, content_type, timeout)


def _run_aiohttp(
    url: str, body: list[str], concurrency: int, duration: int, content_type: str, timeout: int
) -> LoadResult:
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        url,
        *body,
        "--content-type",
        content_type,
        "--concurrency",
        str(concurrency),
        "--duration",
        str(duration),
        "--timeout",
        str(timeout),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + timeout + 30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"loadgen failed ({done.returncode}): {done.stderr[-800:]}")
    return LoadResult(**json.loads(done.stdout.strip().splitlines()[-1]))


def _percentile(sorted_values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``sorted_values``, nearest rank; 0 when empty."""
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def _load(
    url: str, body: bytes, content_type: str, concurrency: int, duration: float, timeout: float
) -> LoadResult:
    import aiohttp

    latencies: list[float] = []
    errors = status_errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
        start = time.perf_counter()
        deadline = start + duration

        async def client() -> None:
            nonlocal errors, status_errors
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers={"Content-Type": content_type}) as response:
                        await response.read()
                        if response.status >= 300:
                            errors += 1
                            status_errors += 1
                except (aiohttp.ClientError, TimeoutError):
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(client() for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    latencies.sort()
    return LoadResult(
        len(latencies),
        errors,
        seconds,
        _percentile(latencies, 0.50) * 1000,
        _percentile(latencies, 0.99) * 1000,
        status_errors,
    )


def main(argv: list[str] | None = None) -> int:
    """Print one JSON object (the fields of LoadResult) for one aiohttp load run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--body", default="")
    parser.add_argument("--body-file", help="send this file's bytes instead of --body")
    parser.add_argument("--content-type", default=FORM)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    args = parser.parse_args(argv)
    body = Path(args.body_file).read_bytes() if args.body_file else args.body.encode()
    result = asyncio.run(_load(args.url, body, args.content_type, args.concurrency, args.duration, args.timeout))
    print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
