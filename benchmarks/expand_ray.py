"""`synth expand` on the local engine against the Ray engine, 1 and 2 CPUs, in one run.

    python benchmarks/expand_ray.py [--num 1200] [--sources sample_data/objects] [--backgrounds sample_data/backgrounds]

The scenes of benchmarks/expand.py (512×512, 3–6 objects, every distortion at its default p).
For each CPU count, the local engine (that many worker processes) and the Ray engine (a local Ray
of that many CPUs, started before the clock runs) make the same shards; the script checks they are
byte-identical. Local and Ray runs alternate, ``--repeats`` times each, and the fastest of each is
kept (the figure least disturbed by other work on a shared machine). Printed, from one run
(compare ratios):

  - composites/s of the composites stage (render, encode, write, commit) per engine and CPU count,
    and the whole run (cutouts, backgrounds, manifest) beside it;
  - CPU time per composite of the stage, summed over every process of the run (this one, its
    worker pool, or the local Ray it started: GCS, raylet, workers), which other work on the machine
    does not inflate the way it inflates wall time;
  - Ray's overhead per composite: Ray's CPU ms per composite minus the local engine's, and the same
    for wall time, at the same CPU count;
  - Ray's fixed costs: starting a local Ray; and the bytes the cluster moves: the job put once into
    the object store (cutout table with superpixels: what every node receives once), the rendered
    tables (each crosses the object store once, render task -> writer task), shard bytes per
    composite (what the store must absorb).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))  # after the repo: benchmarks/train.py must not shadow train/

import ray  # noqa: E402

from augment.expand import run_expand  # noqa: E402
from bench_args import Parser, at_least, existing_folder  # noqa: E402
from augment.system import tune_malloc  # noqa: E402
from benchmarks.expand import benchmark_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def tree_cpu_seconds(with_ray: bool) -> float:
    """CPU seconds used so far by this process and all its descendants, living or reaped; without the
    local Ray's processes (idle beside a local-engine run) unless ``with_ray``."""
    tick = os.sysconf("SC_CLK_TCK")
    times = os.times()
    total = times.user + times.system + times.children_user + times.children_system
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = (int(fields[1]), sum(int(f) for f in fields[11:15]) / tick)
    descendants, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, (parent, _) in parents.items() if parent in frontier} - descendants
        descendants |= frontier
    if not with_ray:
        descendants = {pid for pid in descendants if b"ray" not in _cmdline(pid)}
    # A living descendant's own time plus that of its reaped children; reaped ones are in os.times().
    return total + sum(parents[pid][1] for pid in descendants)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


class StageClock:
    """Wall and CPU seconds from the first progress report of the composites stage to :meth:`stop`."""

    def __init__(self, with_ray: bool) -> None:
        self.with_ray = with_ray
        self.first: float | None = None
        self.first_cpu = 0.0
        self.last = 0.0
        self.cpu = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage == "composites" and self.first is None:
            self.first_cpu = tree_cpu_seconds(self.with_ray)
            self.first = time.perf_counter()

    def stop(self) -> None:
        self.last = time.perf_counter()
        self.cpu = tree_cpu_seconds(self.with_ray) - self.first_cpu

    @property
    def seconds(self) -> float:
        return self.last - (self.first or self.last)


def timed_run(args: argparse.Namespace, out: Path, workers: int, engine: str) -> tuple[float, float, dict]:
    clock = StageClock(with_ray=engine == "ray")
    started = time.perf_counter()
    result = run_expand([args.sources], args.backgrounds, out, benchmark_config(args.num), workers=workers,
                        progress=clock, engine=engine)
    clock.stop()
    assert result.rows_written == args.num
    return clock.seconds, time.perf_counter() - started, {**result.engine_stats, "cpu": clock.cpu}


def same_shards(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.glob("train-*.parquet"))
    return bool(names) and all((a / n).read_bytes() == (b / n).read_bytes() for n in names)


def main() -> None:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num", type=at_least(1), default=600, help="composites made per run (default 600)")
    parser.add_argument("--repeats", type=at_least(1), default=2, help="runs per engine, the best kept (default 2)")
    parser.add_argument("--sources", type=existing_folder, default=ROOT / "sample_data" / "objects",
                        help="object sources (default: sample_data/objects)")
    parser.add_argument("--backgrounds", type=existing_folder, default=ROOT / "sample_data" / "backgrounds",
                        help="background images (default: sample_data/backgrounds)")
    args = parser.parse_args()
    tune_malloc()
    rows, cpu = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for cpus in (1, 2):
            started = time.perf_counter()
            ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
            start_seconds = time.perf_counter() - started
            try:
                for repeat in range(args.repeats):
                    for engine in ("local", "ray"):
                        out = Path(tmp) / f"{engine}{cpus}-{repeat}"
                        run = timed_run(args, out, cpus, engine)
                        if (engine, cpus) not in rows or run[0] < rows[(engine, cpus)][0]:
                            rows[(engine, cpus)] = run
                        cpu[(engine, cpus)] = min(cpu.get((engine, cpus), float("inf")), run[2]["cpu"])
            finally:
                ray.shutdown()
            rows[("ray", cpus)][2]["start_seconds"] = start_seconds
            rows[("ray", cpus)][2]["identical"] = all(same_shards(Path(tmp) / f"local{cpus}-0", Path(tmp) / f"ray{cpus}-{r}")
                                                      for r in range(args.repeats))
            shard_bytes = sum(p.stat().st_size for p in (Path(tmp) / f"local{cpus}-0").glob("train-*.parquet"))

    print(f"{args.num} composites, 512x512, 3-6 objects, best of {args.repeats}; machine: {os.cpu_count()} cores "
          f"(shared; load average {os.getloadavg()[0]:.1f}), ray {ray.__version__}")
    print(f"{'engine':8} {'CPUs':>4} {'stage composites/s':>19} {'CPU ms/composite':>17} {'whole run':>10} {'identical':>9}")
    for (engine, cpus), (stage, whole, stats) in rows.items():
        same = "" if engine == "local" else ("yes" if stats["identical"] else "NO")
        print(f"{engine:8} {cpus:>4} {args.num / stage:19.1f} {cpu[(engine, cpus)] / args.num * 1e3:17.2f} "
              f"{whole:9.1f}s {same:>9}")
    for cpus in (1, 2):
        local_stage, ray_stage = rows[("local", cpus)][0], rows[("ray", cpus)][0]
        local_cpu, ray_cpu = cpu[("local", cpus)] / args.num * 1e3, cpu[("ray", cpus)] / args.num * 1e3
        stats = rows[("ray", cpus)][2]
        print(f"Ray overhead, {cpus} CPU(s): {ray_cpu - local_cpu:+.2f} CPU ms per composite ({ray_cpu / local_cpu:.2f}x "
              f"the local engine's CPU); wall {(ray_stage - local_stage) / args.num * 1e3:+.2f} ms per composite "
              f"({ray_stage / local_stage:.2f}x); starting a local Ray: {stats['start_seconds']:.1f} s; "
              f"{stats['render_tasks']} render + {stats['writer_tasks']} writer tasks; job fetched by "
              f"{stats['job_fetches']} worker process(es)")
    stats = rows[("ray", 2)][2]
    print(f"job put once (cutout table + superpixels + config): {stats['job_bytes'] / 1e6:.2f} MB per node; "
          f"shards: {shard_bytes / args.num / 1e3:.1f} kB per composite "
          f"(each crosses the object store once, render -> writer, then goes to storage)")
    print(f"local 1 -> 2 workers: {rows[('local', 1)][0] / rows[('local', 2)][0]:.2f}x; "
          f"ray 1 -> 2 CPUs: {rows[('ray', 1)][0] / rows[('ray', 2)][0]:.2f}x")


if __name__ == "__main__":
    main()
