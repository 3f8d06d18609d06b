"""MiniLM with batching on a CPU: one worker with N torch threads against N workers of 1 thread.

The workload of ``peers.py`` (the text_classifier plugin, one sentence per request, 32 clients,
max batch 32, ``batch-wait-ms`` 5) served by deepaas_like in two shapes on N = ``nproc`` cores,
each compared with the model alone in the same shape (``peers/model_alone.py``: batches of 32
in a loop; N processes of 1 thread run at once and their sentences/s are summed)::

    python benchmarks/worker_shapes.py                      # 3 rounds, about 4 minutes
    python benchmarks/worker_shapes.py --reference ../old   # adds that checkout's server

``--reference`` runs the server of another checkout (its ``deepaas_like`` package first on
``PYTHONPATH``) in the N-worker shape, e.g. a worktree of the commit before a change. The shapes
take turns in each round, so that all sample the machine's background load alike. The table:
requests/s (median of the rounds), the same over each model-alone shape's median, p99, mean batch
(``/metrics``), server CPU per request (whole process tree) and the busiest worker's share of
the workers' CPU. Writes the table to ``--out`` when given.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402 (needs the path above)
import loadgen  # noqa: E402
import peers  # noqa: E402
import serving  # noqa: E402

CONCURRENCY = 32


@dataclass
class Row:
    label: str
    shape: str  # "1xN" or "Nx1": which model-alone shape it compares with
    rps: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    batch: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    busiest: list[float] = field(default_factory=list)
    errors: int = 0


def alone(data_dir: Path, processes: int, seconds: int) -> float:
    """Sentences/s of the model alone: one process with every core's thread, or ``processes`` of
    1 thread each run at once (summed; ``peers.model_alone``). Raises BenchmarkError on failure."""
    settings = dataclasses.replace(peers.Settings.make(quick=False), alone_seconds=seconds)
    return peers.model_alone(settings, data_dir, rounds=1, processes=processes)["sentences_per_s"][0]


def measure(row: Row, spec: serving.ServerSpec, workdir: Path, seconds: int, warmup: int) -> None:
    request = peers.json_request("/v2/models/text_classifier/predict/", {"text": peers.SENTENCE})
    with serving.serve(spec, request, workdir) as (server, _):
        url = serving.url(server, request)
        body = request.body.decode()
        loadgen.run(url, body, CONCURRENCY, warmup, request.content_type)
        serving.drain(server, request)
        workers = [pid for pid in harness.children(server.pid) if harness.cpu_seconds(pid) > 1.0]
        batched_before = peers.batch_totals(server.port)
        cpu_before = harness.tree_cpu_seconds(server.pid)
        worker_before = {pid: harness.cpu_seconds(pid) for pid in workers}
        result = loadgen.run(url, body, CONCURRENCY, seconds, request.content_type)
        cpu = harness.tree_cpu_seconds(server.pid) - cpu_before
        worker_cpu = [harness.cpu_seconds(pid) - worker_before[pid] for pid in workers]
        batched_after = peers.batch_totals(server.port)
    batches = batched_after[1] - batched_before[1]
    row.rps.append(result.rps)
    row.p99_ms.append(result.p99_ms)
    row.batch.append((batched_after[0] - batched_before[0]) / batches if batches else 0.0)
    row.cpu_us.append(cpu * 1e6 / result.requests if result.requests else 0.0)
    row.busiest.append(max(worker_cpu) / sum(worker_cpu) if sum(worker_cpu) else 0.0)
    row.errors += result.errors
    serving.say(
        f"  {row.label}: {result.rps:.1f} req/s, p99 {result.p99_ms:.0f} ms, batch {row.batch[-1]:.1f}, "
        f"busiest worker {100 * row.busiest[-1]:.0f}% of the workers' CPU"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8, help="measured seconds per load run and model-alone run")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of load thrown away before each run")
    parser.add_argument("--reference", type=Path, help="a checkout whose server runs too, in the N-worker shape")
    parser.add_argument("--out", type=Path, help="write the table (Markdown) here")
    args = parser.parse_args()
    n = serving.nproc()
    serving.ensure_text_classifier()
    options = ("--max-batch-size", str(peers.MAX_BATCH), "--batch-wait-ms", str(peers.BATCH_WAIT_MS))
    one = ("--workers", "1", "--worker-threads", str(n), *options)
    many = ("--workers", str(n), "--worker-threads", "1", *options)
    with tempfile.TemporaryDirectory(prefix="worker-shapes-") as tmp:
        workdir = Path(tmp)
        data_dir = workdir / "text_classifier_data"
        peers.model_alone(peers.Settings.make(quick=True), data_dir, rounds=0)  # trains the shared head
        env = peers.shared_env(data_dir)
        shapes = [
            (
                Row(f"deepaas_like, 1 worker x {n} threads", "1xN"),
                serving.deepaas_like("one", "text_classifier", *one, env=env, ready_timeout=180),
            ),
            (
                Row(f"deepaas_like, {n} workers x 1 thread", "Nx1"),
                serving.deepaas_like("many", "text_classifier", *many, env=env, ready_timeout=180),
            ),
        ]
        if args.reference is not None:
            reference = {**env, "PYTHONPATH": str(args.reference.resolve())}
            label = f"{args.reference.name} (reference), {n} workers x 1 thread"
            spec = serving.deepaas_like("reference", "text_classifier", *many, env=reference, ready_timeout=180)
            shapes.append((Row(label, "Nx1"), spec))
        limits: dict[str, list[float]] = {"1xN": [], "Nx1": []}
        for round_ in range(1, args.rounds + 1):
            serving.say(f"round {round_}/{args.rounds}")
            limits["1xN"].append(alone(data_dir, 1, args.seconds))
            limits["Nx1"].append(alone(data_dir, n, args.seconds))
            serving.say(f"  model alone: 1x{n} {limits['1xN'][-1]:.1f}, {n}x1 {limits['Nx1'][-1]:.1f} sentences/s")
            for row, spec in shapes:
                measure(row, spec, workdir, args.seconds, args.warmup)
    limit = {shape: statistics.median(values) for shape, values in limits.items()}
    header = (
        "| server | requests/s | x model alone 1 process x N threads | x model alone in its shape | p99 ms "
        "| mean batch | server CPU us/request | busiest worker's share | errors | rounds |"
    )
    lines = [header, "|:---|---:|---:|---:|---:|---:|---:|---:|---:|:---|"]
    for row, _ in shapes:
        rps = statistics.median(row.rps)
        lines.append(
            f"| {row.label} | {rps:.1f} | {rps / limit['1xN']:.2f}x | {rps / limit[row.shape]:.2f}x "
            f"| {statistics.median(row.p99_ms):.0f} | {statistics.median(row.batch):.1f} "
            f"| {statistics.median(row.cpu_us):.0f} | {100 * statistics.median(row.busiest):.0f}% | {row.errors} "
            f"| {' '.join(f'{r:.0f}' for r in row.rps)} |"
        )
    for shape, label in (("1xN", f"1 process x {n} threads"), ("Nx1", f"{n} processes x 1 thread")):
        lines.append(
            f"| model alone, {label} | {limit[shape]:.1f} sentences/s | | | | {peers.MAX_BATCH} | | | "
            f"| {' '.join(f'{r:.0f}' for r in limits[shape])} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        args.out.write_text(
            f"# MiniLM with batching: worker shapes ({when})\n\n"
            f"- machine: {n} cores, {serving.cpu_model()}\n"
            f"- command: `python benchmarks/worker_shapes.py {' '.join(sys.argv[1:])}`\n"
            f"- {CONCURRENCY} clients (wrk), max batch {peers.MAX_BATCH}, batch-wait-ms {peers.BATCH_WAIT_MS}, "
            f"{args.rounds} rounds of {args.warmup} s + {args.seconds} s; medians\n\n{table}\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
