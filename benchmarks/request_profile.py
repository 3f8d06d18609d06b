"""Where deepaas_like's server process spends its time on trivial predictions (issue 15).

    python benchmarks/request_profile.py [--compare REV] [--seconds 10] [--concurrency 8]

Serves the trivial plugin (``--workers 2``) under ``wrk`` load at the given concurrency and
samples the server process with py-spy (installed into this venv on first use) for the given
seconds; with ``--compare REV`` it profiles the deepaas_like of git revision ``REV`` too (a
temporary worktree, put first on ``PYTHONPATH``) in the same run, alternating. Each sample is
given to the part of the request path of its innermost frame that belongs to one (the table
below); the "top functions" are the innermost frames themselves. py-spy samples the wall clock:
a sample in a system call counts while the call runs, even when the process waits for a CPU.

It prints Markdown and writes it to ``benchmarks/results/profile-<date>-<nproc>cores.md``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
import loadgen
import serving

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY_SPY = "py-spy==0.4.3"
REQUEST = harness.Request("/v2/models/trivial/predict/", b'{"n": 3}', "application/json")
#: Parts of the request path, by the start of a frame's file as py-spy names it (first match
#: from the innermost frame out).
PARTS = (
    ("access log", ("deepaas_like/cmd/process_server/access_log.py", "aiohttp/web_log.py", "logging/")),
    ("worker call: pool, pipe, protocol", ("deepaas_like/workers/", "multiprocessing/")),
    ("arguments: webargs, marshmallow", ("deepaas_like/api/arguments.py", "webargs/", "marshmallow/")),
    ("response: render, JSON", ("deepaas_like/api/responses.py", "deepaas_like/results.py", "json/")),
    ("metrics: prometheus-client", ("prometheus_client/", "deepaas_like/api/metrics.py")),
    (
        "handler, middlewares, routing",
        ("deepaas_like/", "aiohttp/web_app.py", "aiohttp/web_urldispatcher.py", "aiohttp/web_middlewares.py"),
    ),
    ("HTTP: parse, write (aiohttp)", ("aiohttp/",)),
    ("event loop: asyncio, selectors", ("asyncio/", "selectors.py")),
)


def ensure_py_spy() -> str:
    """The py-spy executable beside this interpreter, installed first when missing."""
    path = Path(sys.executable).with_name("py-spy")
    if not path.exists():
        serving.pip_install(sys.executable, PY_SPY)
    return str(path)


@contextlib.contextmanager
def source_of(revision: str | None) -> Iterator[Path | None]:
    """A worktree of ``revision`` (removed afterwards), or None for this checkout."""
    if revision is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="profile-") as parent:
        tree = Path(parent) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), revision], check=True)
        try:
            yield tree
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)


def profile(source: Path | None, seconds: int, concurrency: int, workdir: Path) -> tuple[list[str], float]:
    """py-spy's raw samples of the server process under load, and the load's requests/s."""
    env = {"PYTHONPATH": str(source)} if source is not None else {}
    spec = serving.deepaas_like("deepaas_like", "trivial", "--workers", "2", env=env)
    output = workdir / f"samples-{'head' if source is None else 'compared'}.txt"
    with serving.serve(spec, REQUEST, workdir) as (server, _):
        runs: list[loadgen.LoadResult] = []

        def load() -> None:
            url = serving.url(server, REQUEST)
            runs.append(loadgen.run_wrk(url, REQUEST.body.decode(), concurrency, seconds + 4, REQUEST.content_type))

        wrk = threading.Thread(target=load)
        wrk.start()
        time.sleep(2)  # sample the steady state
        spy = [ensure_py_spy(), "record", "--pid", str(server.pid), "--duration", str(seconds)]
        spy += ["--rate", "500", "--format", "raw", "--nonblocking", "--output", str(output)]
        subprocess.run(spy, check=True, capture_output=True)
        wrk.join()
    (run,) = runs
    return output.read_text().splitlines(), run.requests / run.seconds


def summarize(lines: list[str]) -> tuple[int, collections.Counter[str], collections.Counter[str]]:
    """(samples, samples per part of :data:`PARTS`, samples per innermost function)."""
    total = 0
    parts: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        total += int(count)
        leaves[frames[-1] or "(no Python frame)"] += int(count)
        parts[_part(frames)] += int(count)
    return total, parts, leaves


def _part(frames: list[str]) -> str:
    for frame in reversed(frames):
        path = frame.rpartition(" (")[2]  # py-spy's "function (package/file.py:line)"
        for name, markers in PARTS:
            if path.startswith(markers):
                return name
    return "other"


def report(label: str, lines: list[str], rate: float) -> list[str]:
    total, parts, leaves = summarize(lines)
    out = [f"### {label}: {rate:.0f} requests/s while sampled, {total} samples", ""]
    out += ["| part of the request path | share of samples |", "|:---|---:|"]
    out += [f"| {name} | {100 * n / total:.1f}% |" for name, n in parts.most_common()]
    out += ["", "| top innermost functions | share |", "|:---|---:|"]
    out += [f"| `{name}` | {100 * n / total:.1f}% |" for name, n in leaves.most_common(12)]
    return out + [""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", metavar="REV", help="also profile deepaas_like at this git revision")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    serving.ensure_trivial_plugin()
    serving.ensure_wrk()
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    lines = [
        "# Profile of deepaas_like's server process: trivial predict (issue 15)",
        "",
        f"- date: {now:%Y-%m-%d %H:%M} UTC; machine: {serving.nproc()} cores, {serving.cpu_model()}",
        f'- load: wrk, {args.concurrency} connections, JSON `{{"n": 3}}`; `--workers 2`; py-spy '
        f"{PY_SPY.split('==')[1]}, 500 samples/s for {args.seconds} s of the server process (not its workers)",
        f"- command: `python benchmarks/request_profile.py{' --compare ' + args.compare if args.compare else ''}`",
        "",
    ]
    with tempfile.TemporaryDirectory(prefix="deepaas-like-profile-") as work:
        workdir = Path(work)
        if args.compare:
            with source_of(args.compare) as tree:
                samples, rate = profile(tree, args.seconds, args.concurrency, workdir)
            lines += report(f"before: {args.compare}", samples, rate)
        samples, rate = profile(None, args.seconds, args.concurrency, workdir)
        lines += report(f"after: {head.stdout.strip()} (this checkout)", samples, rate)
    text = "\n".join(lines)
    print(text)
    results = HERE / "results" / f"profile-{now:%Y-%m-%d}-{serving.nproc()}cores.md"
    results.write_text(text)
    print(f"\nwritten to {results.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        harness.stop_all()
