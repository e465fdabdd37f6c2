"""Sandboxed workers: a bubblewrap jail around a warm zygote (see zygote.py).

Why bubblewrap: it is the small, well-kept tool (Flatpak's) that sets up exactly
what untrusted programs need — fresh user/PID/network/IPC/UTS namespaces, a
read-only view of `/`, a private size-limited tmpfs, no capabilities, death with
its parent — from one command line, as root or not. `unshare` alone cannot mount
a tmpfs or remount read-only without a helper script that would be ours to audit.

Where bubblewrap is missing or namespaces are refused (another OS, a locked-down
container) a worker runs the same zygote with rlimits and process-group kills;
every result says which isolation level was in force. `MOECODER_SANDBOX=rlimits`
forces that fallback.
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ZYGOTE = Path(__file__).with_name("zygote.py")
BWRAP = "bwrap"
ISOLATION_BWRAP = "bwrap"  # namespaces: no network, own PID namespace, read-only fs, private tmpfs
ISOLATION_RLIMITS = "rlimits"  # fallback: resource limits and process-group kills only
STARTUP_TIMEOUT = 30.0
GRACE_SECONDS = 5.0  # the zygote reports a timeout itself; the harness waits this much longer


@dataclass(frozen=True)
class Limits:
    """Resource limits for one program run (all tests of one sample)."""

    cpu_seconds: float = 3.0
    wall_seconds: float = 10.0
    memory_bytes: int = 4 << 30
    file_bytes: int = 16 << 20
    open_files: int = 64
    processes: int = 32
    tmpfs_bytes: int = 64 << 20  # the private /tmp of one worker

    def as_dict(self) -> dict:
        return dict(self.__dict__)  # flat: dataclasses.asdict's deep copy costs more than the job it describes


def _bwrap_command(limits: Limits, control: tuple[int, int]) -> list[str]:
    return [
        BWRAP,
        "--unshare-all",  # user, pid, net, ipc, uts, cgroup namespaces
        "--die-with-parent",
        "--new-session",  # no TIOCSTI on the harness's terminal
        "--ro-bind", "/", "/",
        "--dev", "/dev",
        "--remount-ro", "/dev",  # no writable /dev/shm
        "--proc", "/proc",
        "--size", str(limits.tmpfs_bytes), "--tmpfs", "/tmp",
        *_python_under_tmp(),
        "--clearenv",
        "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin",
        "--setenv", "HOME", "/tmp",
        "--setenv", "LANG", "C.UTF-8",
        "--chdir", "/tmp",
        "--",
        *_zygote_command(control, ISOLATION_BWRAP),
    ]


def _python_under_tmp() -> list[str]:
    """Read-only binds for an interpreter installed under /tmp, which the private tmpfs would hide."""
    binds = []
    for path in sorted({sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))}):
        if path == "/tmp" or path.startswith("/tmp/"):
            binds += ["--ro-bind", path, path]
    return binds


def _zygote_command(control: tuple[int, int], isolation: str) -> list[str]:
    # The source goes on the command line: the sandbox's private /tmp may hide where moecoder is installed.
    # -S: `site` and the .pth files it runs would double the zygote's memory, which every fork copies;
    # programs still see the packages installed next to the harness.
    packages = os.pathsep.join(path for path in sys.path if os.path.basename(path) in ("site-packages", "dist-packages"))
    return [sys.executable, "-I", "-S", "-B", "-c", ZYGOTE.read_text(), str(control[0]), str(control[1]), isolation,
            packages]


class WorkerDied(Exception):
    """The zygote exited or stopped answering (e.g. a program killed it), or never started."""


class Worker:
    """One sandboxed zygote and the pipes to talk to it; never blocks on the zygote's answers.

    A worker is started, becomes ready when the zygote's first line arrives, and then takes
    one job at a time: `send` a job, wait until `fileno()` is readable, `receive` the lines.
    The executor runs many workers from one thread with select().
    """

    def __init__(self, isolation: str, limits: Limits):
        self.isolation = isolation
        self.limits = limits
        self.known_tasks: dict[str, str] = {}  # the suites the zygote holds: task -> kind
        self.ready = False
        self.deadline = time.monotonic() + STARTUP_TIMEOUT  # for the ready line, then for each job's answer
        self._pending = bytearray()
        self._tempdir = None
        to_zygote_r, self._to_zygote = os.pipe()
        self._from_zygote, from_zygote_w = os.pipe()
        control = (to_zygote_r, from_zygote_w)
        if isolation == ISOLATION_BWRAP:
            command, cwd = _bwrap_command(limits, control), "/"
        else:
            self._tempdir = tempfile.mkdtemp(prefix="moecoder-sandbox-")
            command, cwd = _zygote_command(control, isolation), self._tempdir
        self._stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            command, pass_fds=control, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self._stderr, start_new_session=True,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"},
        )
        os.close(to_zygote_r)
        os.close(from_zygote_w)

    def fileno(self) -> int:
        return self._from_zygote

    def send(self, job: dict, tests: dict | None) -> None:
        """Start one job; `tests` is sent the first time this worker sees the task."""
        message = dict(job)
        if job["task"] not in self.known_tasks:
            message["tests"] = tests
            if tests["kind"] == "io":  # the zygote keeps one IO suite (expected outputs can be large)
                self.known_tasks = {task: kind for task, kind in self.known_tasks.items() if kind != "io"}
            self.known_tasks[job["task"]] = tests["kind"]
        payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            _write_all(self._to_zygote, struct.pack("<Q", len(payload)) + payload)
        except OSError:
            raise WorkerDied("the sandbox worker is gone") from None
        self.deadline = time.monotonic() + job["limits"]["wall_seconds"] + GRACE_SECONDS

    def receive(self) -> list[bytearray]:
        """The complete lines the zygote has written (call when readable); WorkerDied at its end."""
        chunk = os.read(self._from_zygote, 1 << 20)
        if not chunk:
            raise WorkerDied(f"the sandbox worker exited: {self.stderr_tail()}")
        self._pending += chunk
        if b"\n" not in chunk:  # look only at new data: reference outputs can be megabytes
            return []
        *lines, self._pending = self._pending.split(b"\n")
        return lines

    def stderr_tail(self) -> str:
        self._stderr.seek(0, os.SEEK_END)
        self._stderr.seek(max(0, self._stderr.tell() - 2000))
        return self._stderr.read().decode("utf-8", "replace").strip()

    def close(self) -> None:
        for fd in (self._to_zygote, self._from_zygote):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()
        self._stderr.close()
        if self._tempdir:
            shutil.rmtree(self._tempdir, ignore_errors=True)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


_detected: str | None = None


def detect_isolation(limits: Limits) -> str:
    """The strongest isolation this machine allows: bubblewrap when a jail starts, else rlimits."""
    global _detected
    forced = os.environ.get("MOECODER_SANDBOX")
    if forced in (ISOLATION_BWRAP, ISOLATION_RLIMITS):
        return forced
    if _detected is None:
        _detected = ISOLATION_RLIMITS
        if shutil.which(BWRAP) and sys.platform == "linux":
            probe = _bwrap_command(limits, (0, 1))
            probe[probe.index("--") + 1:] = ["/bin/true"]  # the same jail, without the cost of a Python start
            try:
                done = subprocess.run(probe, stdin=subprocess.DEVNULL, capture_output=True, timeout=STARTUP_TIMEOUT)
                if done.returncode == 0:
                    _detected = ISOLATION_BWRAP
            except (OSError, subprocess.TimeoutExpired):
                pass
    return _detected
