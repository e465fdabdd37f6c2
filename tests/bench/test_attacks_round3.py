"""Round 3 of the adversarial suite (issue #9): the mechanisms added since round 2.

Since 0d608de the zygote is the jail's init: it reaps the job's child and its orphans as they exit
(SIGCHLD through a wakeup pipe), ignores SIGINT, and without a jail (`--sandbox rlimits`) it is a
subreaper that kills a job's escaped sessions after the job. The attacks below aim at those:

- holes (strict xfail unless said): under `--sandbox rlimits` without cgroups (every harness that is
  not root), a program kills its own zygote (same uid) and a process in a session of its own then
  outlives the job, the worker and the run, as the round-2 "new session" survivor did before the
  subreaper; an honest program that leaves short-lived orphans quickly (a shell's `cmd &` in a loop,
  never more than two alive) fails with EAGAIN on a busy machine, because the zygote's zombies fill
  the pids limit before it is scheduled to reap them (load-dependent: not strict);
- held: a SIGCHLD storm against the zygote, thousands of orphans with odd exit statuses beside a
  child that exits or passes (its status is never lost or mixed up), a program that makes itself a
  subreaper (and a subreaper in the middle of a double fork) or clears its parent-death signal.

Limits are attack_helpers.LIMITS (1 CPU-s, 4 s wall, 512 MiB, 16 processes); a process an attack
leaves behind ends itself within seconds, and the test kills it first.
"""

import os
import signal
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pytest

from moecoder.bench.jail import JailPolicy

from attack_helpers import LIMITS, RIGHT, executor_for, needs_bwrap, observe, run

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


@pytest.mark.xfail(strict=True, reason="hole: under --sandbox rlimits without cgroups a program SIGKILLs its own "
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
