"""The jail's seccomp filter, loaded by real bubblewrap (`bwrap --seccomp FD`).

A probe program tries every refused system call in a forked child, with arguments that
make the call fail harmlessly (or succeed harmlessly) when nothing stops it, and reports
what each call returned. Three runs per jail user:

- unfiltered: the positive control; attacks such as shmget or unshare(CLONE_NEWUSER)
  succeed there, so a refusal under the filter is the filter's doing;
- under a filter built with a sentinel errno no kernel path returns: every refused call
  answers with it, so each rule provably matches its call;
- under the production filter: the same calls get EPERM (clone3 ENOSYS).

Each test runs both as the invoking user and, when that is root, as `nobody` through
setpriv (CI runs as root; the unprivileged jail differs: no capabilities inside).
"""

import errno
import json
import os
import platform
import shutil
import signal
import stat
import subprocess
import sys

import pytest

from moecoder.bench import seccomp

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")

SENTINEL = 1234  # an errno no system call returns: only the filter produces it
NOBODY = 65534
X86_64 = platform.machine() == "x86_64"
CLONE_FLAGS_ARG = 1 if platform.machine().startswith("s390") else 0
IPC_PRIVATE, IPC_CREAT, IPC_STAT = 0, 0o1000, 2

# Arguments for each refused call: invalid pointers, descriptors or commands, so that an
# unfiltered call fails early or does nothing. "pid" is the calling process's id.
ARGS: dict[str, tuple] = {
    "mount": (0, 0, 0, 0, 0), "umount2": (0, 0), "pivot_root": (0, 0), "chroot": (0,),
    "mount_setattr": (-1, 0, 0, 0, 0), "move_mount": (-1, 0, -1, 0, 0), "open_tree": (-1, 0, 0),
    "fsopen": (0, 0), "fsmount": (-1, 0, 0), "fsconfig": (-1, 0, 0, 0, 0), "fspick": (-1, 0, 0),
    "name_to_handle_at": (-1, 0, 0, 0, 0), "open_by_handle_at": (-1, 0, 0),
    "ptrace": (16, 0, 0, 0),  # PTRACE_ATTACH to pid 0: ESRCH
    "process_vm_readv": ("pid", 0, 0, 0, 0, 0), "process_vm_writev": ("pid", 0, 0, 0, 0, 0),
    "kcmp": ("pid", "pid", 1, 0, 0),  # KCMP_VM of itself: 0
    "pidfd_getfd": (-1, 0, 0), "process_madvise": (-1, 0, 0, 0, 0),
    "migrate_pages": (0, 0, 0, 0), "move_pages": (0, 0, 0, 0, 0, 0),
    "unshare": (0x10000000,),  # CLONE_NEWUSER: succeeds without the filter
    "setns": (-1, 0),
    "keyctl": (0, -3, 0),  # KEYCTL_GET_KEYRING_ID of the session keyring
    "add_key": (0, 0, 0, 0, 0), "request_key": (0, 0, 0, 0), "bpf": (0xFFFF, 0, 0),
    "perf_event_open": (0, 0, -1, -1, 0), "userfaultfd": (0xFFFFFFFF,),
    "io_uring_setup": (0, 0), "io_uring_enter": (-1, 0, 0, 0, 0, 0), "io_uring_register": (-1, 0, 0, 0),
    "shmget": (IPC_PRIVATE, 4096, IPC_CREAT | 0o600), "shmat": (-1, 0, 0), "shmdt": (0,),
    "shmctl": (-1, IPC_STAT, 0), "semget": (IPC_PRIVATE, 1, IPC_CREAT | 0o600), "semop": (-1, 0, 0),
    "semtimedop": (-1, 0, 0, 0), "semctl": (-1, 0, IPC_STAT, 0), "msgget": (IPC_PRIVATE, IPC_CREAT | 0o600),
    "msgsnd": (-1, 0, 0, 0), "msgrcv": (-1, 0, 0, 0, 0), "msgctl": (-1, IPC_STAT, 0), "ipc": (0, 0, 0, 0, 0, 0),
    "mq_open": (0, 0, 0, 0), "mq_unlink": (0,), "mq_timedsend": (-1, 0, 0, 0, 0),
    "mq_timedreceive": (-1, 0, 0, 0, 0), "mq_notify": (-1, 0), "mq_getsetattr": (-1, 0, 0),
    "setxattr": (0, 0, 0, 0, 0), "lsetxattr": (0, 0, 0, 0, 0), "fsetxattr": (-1, 0, 0, 0, 0),
    "removexattr": (0, 0), "lremovexattr": (0, 0), "fremovexattr": (-1, 0),
    "kexec_load": (0, 0, 0, 0), "kexec_file_load": (-1, -1, 0, 0, 0), "init_module": (0, 0, 0),
    "finit_module": (-1, 0, 0), "delete_module": (0, 0),
    "reboot": (0, 0, 0, 0),  # wrong magic numbers: EINVAL
    "swapon": (0, 0), "swapoff": (0,),
    "syslog": (10, 0, 0),  # SYSLOG_ACTION_SIZE_BUFFER
    "acct": (0,), "quotactl": (0, 0, 0, 0), "quotactl_fd": (-1, 0, 0, 0),
    "iopl": (0,), "ioperm": (0, 0, 0), "settimeofday": (0, 0), "clock_settime": (-1, 0),
    "clock_adjtime": (-1, 0), "adjtimex": (0,),
}
# x86-64 system calls newer than libseccomp 2.5.4 (its newest is futex_requeue, 456).
NEWER_X86_64 = {"statmount": (457, (0, 0, 0, 0)), "listmount": (458, (0, 0, 0, 0)),
                "mseal": (462, (0, 0, 0)), "open_tree_attr": (467, (-1, 0, 0, 0, 0))}

PROBE = r"""
import ctypes, json, mmap, os, sys

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
I386_GETPID = b"\xb8\x14\x00\x00\x00\xcd\x80\xc3"  # mov eax, 20; int 0x80; ret

def attempt(kind, number, args):
    if kind == "int80":  # the i386 system call table, from a 64-bit process
        page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        page.write(I386_GETPID)
        address = ctypes.addressof(ctypes.c_char.from_buffer(page))
        return "ok:%d" % ctypes.CFUNCTYPE(ctypes.c_int)(address)()
    args = [{"pid": os.getpid(), "ppid": os.getppid()}.get(a, a) if isinstance(a, str) else a for a in args]
    result = libc.syscall(ctypes.c_long(number), *map(ctypes.c_long, args))
    if result == -1:
        return "errno:%d" % ctypes.get_errno()
    if kind == "clone":
        if result == 0:  # the new process, on a copy of this stack
            os._exit(0)
        os.waitpid(result, 0)
    return "ok"

def in_child(call):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            outcome = attempt(*call)
        except BaseException as error:
            outcome = "exception:%r" % error
        os.write(write, outcome.encode())
        os._exit(0)
    os.close(write)
    outcome = os.read(read, 4096).decode()
    _, status = os.waitpid(pid, 0)
    return "signal:%d" % os.WTERMSIG(status) if os.WIFSIGNALED(status) else outcome

calls = json.loads(sys.argv[1])
print(json.dumps({label: in_child(call) for label, call in calls.items()}))
"""

ORDINARY = r"""
import multiprocessing, os, subprocess, threading

pid = os.fork()
if pid == 0:
    os._exit(7)
assert os.WEXITSTATUS(os.waitpid(pid, 0)[1]) == 7
seen = []
threads = [threading.Thread(target=seen.append, args=(i,)) for i in range(4)]
for t in threads: t.start()
for t in threads: t.join()
assert sorted(seen) == [0, 1, 2, 3]
assert subprocess.run(["/bin/true"]).returncode == 0
assert subprocess.run(["/bin/sh", "-c", "exit 3"]).returncode == 3

def child(end):
    end.send(sum(range(10)))

ours, theirs = multiprocessing.Pipe()
process = multiprocessing.Process(target=child, args=(theirs,))
process.start()
assert ours.recv() == 45
process.join()
assert process.exitcode == 0
# on itself, the calls that are refused on another process
import resource
resource.setrlimit(resource.RLIMIT_CORE, resource.getrlimit(resource.RLIMIT_CORE))
resource.prlimit(0, resource.RLIMIT_NOFILE, resource.prlimit(0, resource.RLIMIT_NOFILE))
os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, 0) + 1)
os.sched_setaffinity(0, os.sched_getaffinity(0))
print("ordinary programs ran")
"""


def calls() -> dict[str, list]:
    """label -> [kind, number, args] for every probe the running kernel and arch allow."""
    probes = {name: ["syscall", seccomp.syscall_number(name), list(args)]
              for name, args in ARGS.items() if seccomp.syscall_number(name) is not None}
    clone = seccomp.syscall_number("clone")
    for name, flag in seccomp.CLONE_NAMESPACE_FLAGS.items():
        args = [0] * 5
        args[CLONE_FLAGS_ARG] = flag | signal.SIGCHLD
        probes[f"clone({name})"] = ["clone", clone, args]
    probes["clone3"] = ["syscall", seccomp.syscall_number("clone3"), [0, 0]]
    # Another process (the prober's parent, same uid): each target argument the rules check.
    for label, name, args in (
            ("prlimit64(parent, RLIMIT_CORE, get)", "prlimit64", ["ppid", 4, 0, 0]),
            ("sched_setscheduler(parent)", "sched_setscheduler", ["ppid", 0, 0]),
            ("sched_setparam(parent)", "sched_setparam", ["ppid", 0]),
            ("sched_setattr(parent)", "sched_setattr", ["ppid", 0, 0]),
            ("sched_setaffinity(parent)", "sched_setaffinity", ["ppid", 0, 0]),
            ("setpriority(PRIO_PROCESS, parent)", "setpriority", [0, "ppid", 0]),
            ("setpriority(PRIO_PGRP, own group)", "setpriority", [1, 0, 0]),
            ("ioprio_set(IOPRIO_WHO_PROCESS, parent)", "ioprio_set", [1, "ppid", 0]),
            ("ioprio_set(IOPRIO_WHO_PGRP, own group)", "ioprio_set", [2, 0, 0])):
        if seccomp.syscall_number(name) is not None:
            probes[label] = ["syscall", seccomp.syscall_number(name), args]
    ioctl = seccomp.syscall_number("ioctl")
    for name, request in seccomp.TTY_INJECTION_IOCTLS.items():
        probes[f"ioctl({name})"] = ["syscall", ioctl, [-1, request, 0]]
        # the kernel reads the request as 32 bits: high bits must not dodge the rule
        probes[f"ioctl({name} | 1 << 32)"] = ["syscall", ioctl, [-1, request | 1 << 32, 0]]
    if X86_64:
        for name, (number, args) in NEWER_X86_64.items():
            if number > seccomp.newest_known():
                probes[name] = ["syscall", number, list(args)]
        probes["int 0x80 getpid"] = ["int80", 0, []]
        probes["x32 getpid"] = ["syscall", 0x40000000 | 39, []]
    return probes


def test_every_refused_name_has_a_probe():
    assert set(ARGS) == set(seccomp.REFUSED)


def _reachable(path: str, uid: int) -> bool:
    """Whether `uid` (root, or a user owning none of the path) can reach and run `path`."""
    if not os.path.exists(path):
        return False
    if uid == 0:
        return True
    real = os.path.realpath(path)
    parents = [os.path.dirname(real)]
    while parents[-1] != "/":
        parents.append(os.path.dirname(parents[-1]))
    return all(os.stat(p).st_mode & stat.S_IXOTH for p in parents) and bool(os.stat(real).st_mode & stat.S_IXOTH)


class Jail:
    """bwrap with the layout the harness uses, run as `uid` (the invoker, or nobody via setpriv)."""

    def __init__(self, uid: int):
        self.uid = uid
        candidates = [os.path.join(sys.base_prefix, "bin", "python3"), "/usr/bin/python3"]
        usable = [c for c in candidates if _reachable(c, uid)]
        if not usable:
            pytest.skip(f"no Python interpreter that uid {uid} can reach")
        self.python = usable[0]
        self.prefix = os.path.dirname(os.path.dirname(os.path.realpath(self.python)))
        check = self.run(["/bin/true"])
        if check.returncode != 0:
            pytest.skip(f"bwrap cannot start a jail as uid {uid}: {check.stderr.strip()}")

    def run(self, argv: list[str], program: bytes | None = None, binds: tuple[str, ...] = (),
            env: dict | None = None) -> subprocess.CompletedProcess:
        command = ["bwrap", "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session",
                   "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
                   "--symlink", "usr/lib64", "/lib64", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
        for path in (self.prefix, *binds):
            if not path.startswith("/usr/"):
                command += ["--ro-bind", path, path]
        if self.uid != os.geteuid():
            command = ["setpriv", f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups", *command]
        pass_fds = ()
        if program is not None:
            read, write = os.pipe()
            os.write(write, program)  # a few KiB: fits the pipe's buffer
            os.close(write)
            command += ["--seccomp", str(read)]
            pass_fds = (read,)
        try:
            return subprocess.run(command + argv, capture_output=True, text=True, timeout=60, cwd="/",
                                  pass_fds=pass_fds, env=env or {"PATH": "/usr/bin:/bin"})
        finally:
            for fd in pass_fds:
                os.close(fd)

    def probe(self, program: bytes | None) -> dict[str, str]:
        done = self.run([self.python, "-I", "-c", PROBE, json.dumps(calls())], program)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


@pytest.fixture(scope="module", params=["invoker", "nobody"])
def jail(request):
    if request.param == "invoker":
        return Jail(os.geteuid())
    if os.geteuid() != 0:
        pytest.skip("already unprivileged: the invoker run is the unprivileged run")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    return Jail(NOBODY)


@pytest.fixture(scope="module")
def unfiltered(jail):
    return jail.probe(None)


def test_each_refused_call_meets_its_rule(jail):
    outcomes = jail.probe(seccomp.filter_bytes(SENTINEL))
    refused = {label for label in outcomes if label not in {"clone3", "int 0x80 getpid", "x32 getpid"}
               and label not in NEWER_X86_64}
    assert {label: outcomes[label] for label in refused} == {label: f"errno:{SENTINEL}" for label in refused}
    assert outcomes["clone3"] == f"errno:{errno.ENOSYS}"


def test_the_filter_turns_working_attacks_into_eperm(jail, unfiltered):
    """Positive control: without the filter these succeed in the very same jail."""
    attacks = ["shmget", "semget", "msgget", "unshare", "clone(CLONE_NEWUSER)", "process_vm_readv", "kcmp"]
    assert {a: unfiltered[a].split(":")[0] for a in attacks} == dict.fromkeys(attacks, "ok")
    outcomes = jail.probe(seccomp.filter_bytes())
    expected = {label: f"errno:{errno.EPERM}" for label in outcomes}
    expected["clone3"] = f"errno:{errno.ENOSYS}"
    for label in [*NEWER_X86_64, "int 0x80 getpid", "x32 getpid"]:
        expected.pop(label, None)
    assert {label: outcomes[label] for label in expected} == expected
    assert unfiltered["clone3"] != f"errno:{errno.ENOSYS}"  # libc's fallback is the filter's doing


@pytest.mark.skipif(not X86_64, reason="the second system call tables probed are x86-64's")
def test_other_abis_and_newer_calls_do_not_slip_past(jail, unfiltered):
    outcomes = jail.probe(seccomp.filter_bytes())
    if unfiltered["int 0x80 getpid"] == f"signal:{signal.SIGSEGV}":
        pytest.skip("this kernel has no i386 emulation to probe")
    assert unfiltered["int 0x80 getpid"].startswith("ok:")
    assert outcomes["int 0x80 getpid"] == outcomes["x32 getpid"] == f"signal:{signal.SIGSYS}"
    implemented = [n for n in NEWER_X86_64 if n in unfiltered and unfiltered[n] != f"errno:{errno.ENOSYS}"]
    if not implemented:
        pytest.skip("this kernel has none of the system calls newer than libseccomp")
    assert {n: outcomes[n] for n in implemented} == dict.fromkeys(implemented, f"errno:{errno.ENOSYS}")


def test_ordinary_programs_run_under_the_filter(jail):
    done = jail.run([jail.python, "-I", "-c", ORDINARY], seccomp.filter_bytes())
    assert (done.returncode, done.stdout.strip()) == (0, "ordinary programs ran"), done.stderr


def test_numpy_runs_under_the_filter(jail):
    numpy = pytest.importorskip("numpy")
    site = os.path.dirname(os.path.dirname(numpy.__file__))
    if not _reachable(os.path.join(site, "numpy"), jail.uid):
        pytest.skip(f"uid {jail.uid} cannot read {site}")
    code = "import numpy as np; a = np.ones((300, 300)); print(int((a @ a).sum()))"
    done = jail.run([jail.python, "-c", code], seccomp.filter_bytes(), binds=(site,),
                    env={"PATH": "/usr/bin:/bin", "PYTHONPATH": site, "OPENBLAS_NUM_THREADS": "2"})
    assert (done.returncode, done.stdout.strip()) == (0, str(300 ** 3)), done.stderr


def test_the_program_fits_the_kernel_limit():
    program = seccomp.filter_bytes()
    assert len(program) % 8 == 0 and 0 < len(program) // 8 <= 4096  # BPF_MAXINSNS
    read, write = os.pipe()
    seccomp.write_filter(write)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        assert pipe.read() == program
