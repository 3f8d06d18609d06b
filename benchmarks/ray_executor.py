"""The Ray executor against the process executor on one machine, and its failure drills (issue 12).

One command, on 127.0.0.1 only, as root (Ray runs in a network namespace of its own with only
loopback: the script enters one itself)::

    python benchmarks/ray_executor.py [--quick] [--only load|replacement|drills]

It measures, in the same run:

1. trivial predict (``benchmarks/plugins/trivial``) and the MiniLM ``text_classifier`` with
   batching (``--max-batch-size 32 --batch-wait-ms 5``), 1 worker, at concurrency 8 and 32:
   requests/s, p50/p99 latency, and the whole machine's CPU per request (Ray's own processes
   and the replicas are not children of the server), process executor against Ray executor
   (a one-node Ray cluster of 2 CPUs), and their ratio;
2. seconds from killing a model's only worker (SIGKILL) to the first 200 answer: a new local
   worker process against a new replica placed by Ray (median of 3);
3. failure drills on a two-node cluster, three clients sending 0.3 s predictions all along:
   a replica killed, a node crashed (its ``ray start`` SIGKILLed), a node stopped as ``ray stop``
   does (SIGTERM: Ray drains it), the head lost and started again: which requests failed, how,
   and for how long the model answered nothing but errors.

It prints Markdown and writes it to ``benchmarks/results/ray_executor.md`` (``--only`` prints only).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

import harness  # noqa: E402 - after the path above
import loadgen  # noqa: E402
import serving  # noqa: E402
from harness import BenchmarkError, Request  # noqa: E402

from tests.conftest import make_plugin_site  # noqa: E402
from tests.ray.cluster import SLOT, Cluster, loopback_namespace  # noqa: E402

RAY_PLUGINS = ROOT / "tests" / "ray" / "plugins"
CONCURRENCIES = (8, 32)
SECTIONS = ("load", "replacement", "drills")
PROCESS, RAY = "process executor", "Ray executor"


@dataclass(frozen=True)
class Settings:
    rounds: int
    cell: int
    warmup: int
    minilm_cell: int
    minilm_warmup: int
    replacements: int
    quick: bool = False

    @classmethod
    def make(cls, quick: bool) -> Settings:
        if quick:
            return cls(rounds=1, cell=3, warmup=1, minilm_cell=4, minilm_warmup=3, replacements=1, quick=True)
        return cls(rounds=3, cell=5, warmup=2, minilm_cell=8, minilm_warmup=4, replacements=3)


@dataclass
class Cell:
    """The load runs of one executor, plugin and concurrency."""

    plugin: str
    executor: str
    concurrency: int
    runs: list[tuple[loadgen.LoadResult, float]] = field(default_factory=list)  # (load, machine CPU s)

    def median(self, figure: str) -> float:
        return statistics.median(getattr(load, figure) for load, _ in self.runs)

    @property
    def cpu_us(self) -> float:
        return statistics.median(cpu * 1e6 / load.requests for load, cpu in self.runs if load.requests)

    @property
    def errors(self) -> int:
        return sum(load.errors for load, _ in self.runs)


@dataclass
class Report:
    cells: list[Cell] = field(default_factory=list)
    replacement: dict[str, list[float]] = field(default_factory=dict)
    drills: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------- servers


def executor_options(executor: str, cluster: Cluster) -> list[str]:
    if executor == PROCESS:
        return []
    return ["--executor", "ray", "--ray-address", cluster.address, "--ray-num-cpus", "1"]


def spec(executor: str, cluster: Cluster, model: str, *options: str, env: dict[str, str]) -> serving.ServerSpec:
    return serving.deepaas_like(
        f"{model}, {executor}", model, *executor_options(executor, cluster), *options, env=env, ready_timeout=300
    )


def machine_cpu() -> float:
    """CPU seconds the machine spent, less this process's and its children's (the load generator)."""
    return harness.machine_busy_seconds() - harness.own_cpu_seconds()


def load_section(settings: Settings, cluster: Cluster, workdir: Path, env: dict[str, str], report: Report) -> None:
    """Section 1: trivial and MiniLM, process against Ray, the two taking turns."""
    plugins = [
        ("trivial", harness.form_request("/v2/models/trivial/predict/", n="3"), (), settings.cell, settings.warmup),
        (
            "text_classifier",
            harness.form_request("/v2/models/text_classifier/predict/", text=serving.SENTENCE),
            # One math thread in both: Ray gives a replica OMP_NUM_THREADS=1 (its num_cpus), and
            # torch's threads spin-waiting for a shared core would measure the machine, not the executor.
            ("--max-batch-size", "32", "--batch-wait-ms", "5", "--worker-threads", "1"),
            settings.minilm_cell,
            settings.minilm_warmup,
        ),
    ]
    for model, request, options, seconds, warmup in plugins:
        say(f"1. {model}")
        with contextlib.ExitStack() as stack:
            servers = []
            for executor in (PROCESS, RAY):
                server, ready = stack.enter_context(
                    serving.serve(spec(executor, cluster, model, *options, env=env), request, workdir)
                )
                say(f"  {executor}: ready in {ready:.1f} s")
                servers.append((executor, server))
            for concurrency in CONCURRENCIES:
                cells = {executor: Cell(model, executor, concurrency) for executor, _ in servers}
                for round_ in range(settings.rounds):
                    for executor, server in servers:
                        url, body = serving.url(server, request), request.body.decode()
                        loadgen.run(url, body, concurrency, warmup, request.content_type)
                        serving.drain(server, request)
                        before = machine_cpu()
                        result = loadgen.run(url, body, concurrency, seconds, request.content_type)
                        cells[executor].runs.append((result, machine_cpu() - before))
                        say(
                            f"  {executor} c={concurrency} round {round_ + 1}: {result.rps:.0f} req/s, "
                            f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, errors {result.errors}"
                        )
                report.cells += cells.values()


def replica_pids(cluster: Cluster) -> set[int]:
    """The replicas running on our cluster's nodes (Ray names an actor's process ``ray::Class``)."""
    nodes = [node.pid for node in (cluster.head, cluster.node2) if node is not None]
    below = {pid for node in nodes for pid in harness.descendants(node)}
    return {pid for pid in below if _cmdline(pid).startswith(b"ray::Replica")}


def replacement_section(
    settings: Settings, cluster: Cluster, workdir: Path, env: dict[str, str], report: Report
) -> None:
    """Section 2: kill the only worker, time until a new one answers."""
    request = harness.form_request("/v2/models/trivial/predict/", n="3")
    say("2. a new worker's first answer")
    for executor in (PROCESS, RAY):
        with serving.serve(spec(executor, cluster, "trivial", env=env), request, workdir) as (server, _):
            for _ in range(settings.replacements):
                if executor == PROCESS:  # the worker, not multiprocessing's resource tracker
                    victims = {pid for pid in harness.children(server.pid) if b"spawn_main" in _cmdline(pid)}
                else:
                    victims = replica_pids(cluster)
                if len(victims) != 1:
                    raise BenchmarkError(f"{executor}: expected one worker, found {sorted(victims)}")
                killed = time.monotonic()
                os.kill(victims.pop(), signal.SIGKILL)
                while True:
                    with contextlib.suppress(OSError):
                        if harness.post(server.port, request, timeout=30)[0] == 200:
                            break
                    time.sleep(0.02)
                seconds = time.monotonic() - killed
                report.replacement.setdefault(executor, []).append(seconds)
                say(f"  {executor}: first answer {seconds:.2f} s after the kill")
                time.sleep(1)


def _cmdline(pid: int) -> bytes:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    return b""


# -------------------------------------------------------------------------------------- drills


@dataclass
class Answer:
    sent: float
    done: float
    status: int
    message: str


class Load:
    """``clients`` threads posting ``request`` in a loop, every answer recorded."""

    def __init__(self, port: int, request: Request, clients: int = 3) -> None:
        self.port, self.request = port, request
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client) for _ in range(clients)]

    def _client(self) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                status, body = harness.post(self.port, self.request, timeout=60)
                message = "" if status == 200 else body.decode(errors="replace")
            except OSError as error:
                status, message = 0, str(error)
            self.answers.append(Answer(sent, time.monotonic(), status, message))
            if status != 200:
                time.sleep(0.05)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def wait_for_successes(self, count: int, since: float, timeout: float = 180.0) -> None:
        """Until the last ``count`` answers, all to requests sent after ``since``, are 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = self.answers[-count:]
            if len(last) == count and all(a.status == 200 and a.sent >= since for a in last):
                return
            time.sleep(0.1)
        raise BenchmarkError(f"no {count} answers in a row within {timeout:g} s")


def wait_for_workers(port: int, count: int, timeout: float = 180.0) -> None:
    """Until the drill model has ``count`` live replicas (``/metrics``)."""
    wanted = f'deepaas_like_workers{{model="ray_probe"}} {count:.1f}'
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            connection = http.client.HTTPConnection(harness.HOST, port, timeout=10)
            connection.request("GET", "/metrics")
            if wanted in connection.getresponse().read().decode().splitlines():
                return
        time.sleep(0.2)
    raise BenchmarkError(f"the drill model did not get back to {count} replicas within {timeout:g} s")


def summary(name: str, answers: list[Answer], since: float) -> list[str]:
    """A drill's row: the answers that failed (statuses, the first one's message), from when
    to when (seconds after the fault), and when the model answered 200 again after them.
    """
    failed = [a for a in answers if a.done >= since and a.status != 200]
    if not failed:
        return [name, "none", "", "-", "never stopped"]
    statuses = ", ".join(f"{n} x {s}" for s, n in sorted(_count(a.status for a in failed).items()))
    message = " ".join(failed[0].message.split()).replace("|", "/")[:170]
    last = max(a.done for a in failed)
    back = min((a.done for a in answers if a.status == 200 and a.done > last), default=None)
    window = f"{failed[0].done - since:.1f} to {last - since:.1f}"
    return [name, statuses, message, window, f"{back - since:.1f}" if back is not None else "-"]


def _count(values: object) -> dict[int, int]:
    counts: dict[int, int] = {}
    for value in values:  # type: ignore[attr-defined]
        counts[value] = counts.get(value, 0) + 1
    return counts


def drills_section(cluster: Cluster, workdir: Path, env: dict[str, str], report: Report) -> None:
    """Section 3: a replica killed, a node crashed, a node drained, the head lost."""
    say("3. failure drills")
    cluster.start_node2()
    request = harness.form_request("/v2/models/ray_probe/predict/", seconds="0.3")
    # One slot per node and per replica: one replica on each node.
    options = ["--executor", "ray", "--ray-address", cluster.address, "--workers", "2", "--ray-num-cpus", "0.1"]
    options += ["--ray-resources", f"{SLOT}:1", "--ray-head-timeout", "3", "--ray-reconnect-interval", "1"]
    drill = serving.deepaas_like("drills", "ray_probe", *options, env=env, ready_timeout=300)
    with serving.serve(drill, request, workdir) as (server, _), Load(server.port, request) as load:
        load.wait_for_successes(10, 0.0)
        victim = sorted(replica_pids(cluster))[0]
        began = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        load.wait_for_successes(20, began)
        report.drills.append(summary("a replica SIGKILLed", load.answers, began))

        wait_for_workers(server.port, 2)
        began = time.monotonic()
        cluster.stop_node2(crash=True)
        load.wait_for_successes(20, began)
        report.drills.append(summary("node 2 crashed (its `ray start` SIGKILLed)", load.answers, began))
        cluster.start_node2()
        wait_for_workers(server.port, 2)  # its replica placed again

        began = time.monotonic()
        cluster.stop_node2(crash=False)
        load.wait_for_successes(20, began)
        report.drills.append(summary("node 2 stopped as `ray stop` does (SIGTERM, drained)", load.answers, began))

        began = time.monotonic()
        cluster.stop_head(crash=True)
        cluster.stop_node2(crash=True)
        time.sleep(5)
        cluster.start_head()
        cluster.start_node2()
        load.wait_for_successes(20, began)
        report.drills.append(summary("head crashed, started again 5 s later (with node 2)", load.answers, began))


# -------------------------------------------------------------------------------------- report


def render(settings: Settings, report: Report, elapsed: float, context: dict[str, str]) -> str:
    out = ["# Ray executor against process executor (issue 12)", ""]
    out += [
        f"- date: {context['date']}; {serving.nproc()} cores, CPU {serving.cpu_model() or 'unknown'}; "
        f"Ray {serving.package_version('ray')}; deepaas_like at commit {context['revision']}",
        f"- other work on the machine: 1-minute load average {context['load_before']} before, "
        f"{serving.load_average()} after (two other engineers share these 2 cores)",
        f"- load: {context['wrk'] or 'benchmarks/loadgen.py'}; {settings.rounds} round(s) per cell, executors "
        f"taking turns; {settings.warmup} s warm-up + {settings.cell} s measured (MiniLM: "
        f"{settings.minilm_warmup} s + {settings.minilm_cell} s); medians over the rounds",
        "- Ray executor: a one-node Ray cluster of 2 CPUs (`ray start --head --num-cpus 2`) in a loopback-only "
        "network namespace, the server connected with `--ray-address`, 1 replica of `--ray-num-cpus 1`",
        f"- command: `python benchmarks/ray_executor.py{' --quick' if settings.quick else ''}` "
        f"(whole run {elapsed / 60:.1f} min)",
        "",
        "## 1. Load: process executor against Ray executor, 1 worker",
        "",
    ]
    header = ["plugin", "c", "executor", "req/s", "p50 ms", "p99 ms", "errors", "machine CPU us/req"]
    rows = []
    ratios = []
    for cell in report.cells:
        rows.append(
            [
                cell.plugin,
                str(cell.concurrency),
                cell.executor,
                f"{cell.median('rps'):.1f}",
                f"{cell.median('p50_ms'):.2f}",
                f"{cell.median('p99_ms'):.2f}",
                str(cell.errors),
                f"{cell.cpu_us:.0f}",
            ]
        )
        if cell.executor == RAY:
            base = next(
                c
                for c in report.cells
                if (c.plugin, c.concurrency, c.executor) == (cell.plugin, cell.concurrency, PROCESS)
            )
            ratios.append(
                [
                    cell.plugin,
                    str(cell.concurrency),
                    f"{base.median('rps') / cell.median('rps'):.2f}x",
                    f"{cell.median('p50_ms') / base.median('p50_ms'):.2f}x",
                    f"{cell.cpu_us / base.cpu_us:.2f}x",
                    "<= 2x" if cell.plugin == "trivial" else "<= 1.10x",
                ]
            )
    out += serving.table(header, rows)
    out += ["", "Ratios, Ray over process (time per request: higher is slower):", ""]
    out += serving.table(["plugin", "c", "time per request (1/req/s)", "p50", "machine CPU/req", "goal"], ratios)
    out += [
        "",
        "Machine CPU: every process's CPU time during the measured run (server, workers, replicas, Ray's own "
        "processes, and other work on the machine) less the load generator's, per answered request.",
        "",
        f"## 2. A new worker's first answer (seconds from SIGKILL of the only worker to the first 200; "
        f"{settings.replacements} time(s) each)",
        "",
    ]
    out += serving.table(
        ["executor", "median s", "runs s"],
        [
            [executor, f"{statistics.median(runs):.2f}", ", ".join(f"{r:.2f}" for r in runs)]
            for executor, runs in report.replacement.items()
        ],
    )
    out += [
        "",
        "## 3. Failure drills (two nodes, 2 replicas one per node, three clients sending 0.3 s predictions)",
        "",
    ]
    out += serving.table(
        ["drill", "failed answers", "the first failure's message", "failures, s after the fault", "200 again at s"],
        report.drills,
    )
    out += [
        "",
        "Seconds from the fault (the signal sent); a failure is any answer but 200 (0: no HTTP answer). "
        "The clients retry at once (50 ms after a failure), so the count of 503s measures time, not users. "
        "The head drill starts both nodes again: a node whose head is gone for good shuts down.",
    ]
    if report.notes:
        out += ["", "## Notes", "", *[f"- {n}" for n in report.notes]]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------------------- main


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # runs the finally blocks that stop the servers and the cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short round per cell")
    parser.add_argument("--only", action="append", choices=SECTIONS, help="run only this section; print only")
    args = parser.parse_args(argv)
    settings = Settings.make(args.quick)
    sections = args.only or list(SECTIONS)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(loopback_namespace())
        except OSError as error:
            raise SystemExit(f"ray_executor.py: needs a network namespace of its own (run as root): {error}") from None
        return run(args, settings, sections)


def run(args: argparse.Namespace, settings: Settings, sections: list[str]) -> int:
    """The whole run, inside the loopback-only network namespace."""
    if [name for _, name in socket.if_nameindex()] != ["lo"]:
        raise SystemExit("ray_executor.py: not in a loopback-only network namespace")
    signal.signal(signal.SIGTERM, _terminate)
    began = time.monotonic()
    context = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "load_before": serving.load_average(),
        "revision": serving.source_revision(),
        "wrk": serving.ensure_wrk(),
    }
    serving.ensure_trivial_plugin()
    serving.ensure_text_classifier()
    workdir = Path(tempfile.mkdtemp(prefix="deepaas-like-ray-bench-"))
    data = workdir / "text_classifier_data"
    data.mkdir()
    env = make_plugin_site(workdir / "site", {"ray_probe": "ray_probe"})
    env["PYTHONPATH"] = os.pathsep.join([str(RAY_PLUGINS), env["PYTHONPATH"]])
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", DEEPAAS_LIKE_TEXT_CLASSIFIER_DATA_DIR=str(data))
    cluster = Cluster(workdir, env, head_cpus=2)
    report = Report()
    try:
        cluster.start_head()
        if "load" in sections:
            load_section(settings, cluster, workdir, env, report)
        if "replacement" in sections:
            replacement_section(settings, cluster, workdir, env, report)
        if "drills" in sections:
            drills_section(cluster, workdir, env, report)
    except BenchmarkError as error:
        report.notes.append(f"stopped: {error}")
        say(f"stopped: {error}")
    finally:
        harness.stop_all()
        cluster.close()
        shutil.rmtree(workdir, ignore_errors=True)
    markdown = render(settings, report, time.monotonic() - began, context)
    print(markdown)
    if not args.only:
        path = HERE / "results" / "ray_executor.md"
        path.write_text(markdown)
        say(f"written to {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
