"""What serving the web page (``/web/``, issue 29) costs the API when nobody opens it:
trivial predict with the page against the same server from the commit before the page, in
the same run, taking turns.

    python benchmarks/web_page_cost.py [--before REF] [--rounds 3] [--duration 4]

``--before`` defaults to the parent of the commit that added ``deepaas_like/api/web_page.py``;
that commit is checked out in a temporary git worktree and served from there (same venv,
same plugin, ``PYTHONPATH`` pointing at it). Each round serves the trivial plugin
(``benchmarks/plugins/trivial``, one worker) from each checkout in turn (which goes first
alternates between rounds) and loads its
predict with wrk (or the aiohttp generator) at concurrency 1, 8 and 64. It prints Markdown
and writes ``benchmarks/results/web-page-cost-<date>-<nproc>cores.md``. Servers are
stopped by PID however the run ends.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402
import loadgen  # noqa: E402
from serving import console_script, ensure_trivial_plugin  # noqa: E402

CONCURRENCY = (1, 8, 64)
TRIVIAL = harness.form_request("/v2/models/trivial/predict/", n="3")


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout.strip()


def commit_before_page() -> str:
    added = git("log", "--diff-filter=A", "--format=%H", "--", "deepaas_like/api/web_page.py").splitlines()
    if not added:
        raise harness.BenchmarkError("no commit adds deepaas_like/api/web_page.py: give --before")
    return git("rev-parse", "--short", f"{added[-1]}^")


def measure(label: str, pythonpath: Path, workdir: Path, duration: int) -> dict[int, loadgen.LoadResult]:
    """Serve the trivial plugin from ``pythonpath``; one load run per concurrency."""
    port = harness.free_port()
    argv = [
        console_script("deepaas-like-run"),
        *("--listen-ip", harness.HOST, "--listen-port", str(port), "--model-name", "trivial"),
        *("--database-url", f"sqlite+aiosqlite:///{workdir / (label + '.db')}"),
        *("--upload-dir", str(workdir / "uploads"), "--noaccess-log"),
    ]
    env = {"PYTHONPATH": str(pythonpath)}
    with harness.running(label, argv, port, workdir / f"{label}.log", env=env) as server:
        harness.wait_until_predicts(server, TRIVIAL, timeout=120)
        url = f"http://{harness.HOST}:{port}{TRIVIAL.path}"
        loadgen.run(url, TRIVIAL.body.decode(), 8, 1)  # warm-up
        return {c: loadgen.run(url, TRIVIAL.body.decode(), c, duration) for c in CONCURRENCY}


def table(results: dict[str, list[dict[int, loadgen.LoadResult]]]) -> list[str]:
    lines = ["| server | concurrency | requests/s (median) | rounds' range | p50 ms | p99 ms | errors |"]
    lines.append("|:---|---:|---:|---:|---:|---:|---:|")
    for label, rounds in results.items():
        for c in CONCURRENCY:
            cells = [r[c] for r in rounds]
            rps = [cell.rps for cell in cells]
            lines.append(
                f"| {label} | {c} | {statistics.median(rps):.0f} | {min(rps):.0f}-{max(rps):.0f} | "
                f"{statistics.median(x.p50_ms for x in cells):.2f} | {statistics.median(x.p99_ms for x in cells):.2f} | "
                f"{sum(x.errors for x in cells)} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", help="the commit to compare with (default: the one before the page)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=4, help="seconds per load run")
    options = parser.parse_args()
    ensure_trivial_plugin()
    before = options.before or commit_before_page()
    now = git("rev-parse", "--short", "HEAD") + (
        " + changes" if git("status", "--porcelain", "--", "deepaas_like") else ""
    )
    workdir = Path(tempfile.mkdtemp(prefix="web-page-cost-"))
    (workdir / "uploads").mkdir()
    tree = workdir / "before"
    git("worktree", "add", "--detach", str(tree), before)
    labels = {f"before the page ({before})": tree, f"with the page ({now})": ROOT}
    results: dict[str, list[dict[int, loadgen.LoadResult]]] = {label: [] for label in labels}
    try:
        for round_ in range(options.rounds):
            turns = list(enumerate(labels.items()))
            for index, (label, path) in turns if round_ % 2 == 0 else reversed(turns):  # neither always first
                print(f"round {round_ + 1}: {label}", file=sys.stderr)
                results[label].append(measure(f"s{index}", path, workdir, options.duration))
    finally:
        harness.stop_all()
        git("worktree", "remove", "--force", str(tree))
        shutil.rmtree(workdir, ignore_errors=True)
    date = datetime.datetime.now(datetime.UTC)
    out = [
        "# What the web page costs the API when unused (trivial predict)",
        "",
        f"- date: {date:%Y-%m-%d %H:%M} UTC; {os.cpu_count()} cores; load generator "
        f"{'wrk' if loadgen.have_wrk() else 'aiohttp'} on the same cores",
        f"- command: `python benchmarks/web_page_cost.py --rounds {options.rounds} --duration {options.duration}`;"
        " the servers take turns each round, in alternating order (1 worker, access log off)",
        "",
        *table(results),
    ]
    text = "\n".join(out) + "\n"
    print(text)
    path = HERE / "results" / f"web-page-cost-{date:%Y-%m-%d}-{os.cpu_count()}cores.md"
    path.write_text(text)
    print(f"written to {path.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
