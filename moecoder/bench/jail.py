"""The jail a program runs in: bubblewrap, an unprivileged uid, no capabilities, seccomp, cgroups.

What a program sees is built from an allow-list (`JailPolicy`): /usr (and the /bin, /lib...
links to it), the dynamic linker's cache, the interpreter's installation prefix with its
site-packages hidden, the packages the policy names (numpy by default) under /opt/moecoder/site,
a private size-limited /tmp, a minimal /dev and its own /proc. Nothing else of the host exists
in it: no home directories beyond the interpreter's prefix, no /etc/shadow, /var, /run,
datasets, samples, verdict store or $MOECODER_HOME.

Privilege. When the harness runs as root, the jail is two nested bubblewraps: the outer one,
as root, builds the allow-listed file system and the network, IPC and UTS namespaces (root can
read an interpreter installed under /root, which the unprivileged uid cannot); inside it,
`setpriv` drops to `nobody` (no groups, empty capability sets, no_new_privs) and the inner
bubblewrap, running as that uid, adds a user namespace with no capabilities
(`--cap-drop ALL`), no nested user namespaces (`--disable-userns`), its own PID namespace and
/proc, and the seccomp filter (seccomp.py). A harness that is not root runs only the inner one,
as itself, with the same binds. Either way the program's processes hold no capability and, as
root, no process of the jail has host uid 0 (`Jail.host_uid` checks it from outside).

Resources. Where the harness may create cgroups (v1 controllers memory, pids and cpuacct, or
a v2 hierarchy with memory and pids), each jail gets its own group under the harness's own:
memory and process count are limits on the whole process tree, and CPU time is read from the
group, so CPU burnt in forked helpers counts. Elsewhere the limits are per process (rlimits),
and `Jail.resources` says so.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from moecoder.bench import seccomp

BWRAP = "bwrap"
SETPRIV = "setpriv"
NOBODY = 65534
SITE = "/opt/moecoder/site"  # where allowed packages appear in the jail
DEFAULT_PACKAGES = ("numpy",)
PR_SET_DUMPABLE = 4


@dataclass(frozen=True)
class Limits:
    """Resource limits for one program run (all tests of one sample)."""

    cpu_seconds: float = 3.0  # CPU time of the whole process tree
    wall_seconds: float = 10.0
    memory_bytes: int = 4 << 30  # the whole jail's memory with cgroups; per process without
    file_bytes: int = 16 << 20
    open_files: int = 64
    processes: int = 32
    tmpfs_bytes: int = 64 << 20  # the private /tmp of one jail

    def as_dict(self) -> dict:
        return dict(self.__dict__)  # flat: dataclasses.asdict's deep copy costs more than the job it describes


@dataclass(frozen=True)
class JailPolicy:
    """What the jail allows. The defaults are the only safe setting; the switches exist so that the
    start-up probe and the attack tests can show each defence matters (a weakened jail must be
    refused by the probe, and an attack must succeed against it)."""

    packages: tuple[str, ...] = DEFAULT_PACKAGES  # importable third-party packages
    drop_uid: bool = True  # as root: run the jail as `nobody`
    drop_capabilities: bool = True
    seccomp: bool = True
    disable_userns: bool = True
    allow_list: bool = True  # False: the host's / bound whole (read-only)
    cgroups: bool = True


# ------------------------------------------------------------------ cgroups


@dataclass
class Cgroup:
    """One jail's control groups: memory and process limits and CPU time over its whole tree."""

    version: int
    directories: dict[str, Path]  # controller -> the group's directory
    controllers: tuple[str, ...] = field(default=())
    _cpu_fd: int | None = None

    def cpu_seconds(self) -> float:
        """CPU time used by every process that ever ran in the group (reaped or not)."""
        if self._cpu_fd is None:  # kept open: read at the start and end of every job
            name = ("cpuacct", "cpuacct.usage") if self.version == 1 else ("cpu", "cpu.stat")
            self._cpu_fd = os.open(self.directories[name[0]] / name[1], os.O_RDONLY)
        text = os.pread(self._cpu_fd, 4096, 0).decode()
        if self.version == 1:
            return int(text) / 1e9
        for line in text.splitlines():
            if line.startswith("usage_usec "):
                return int(line.split()[1]) / 1e6
        raise OSError("cpu.stat has no usage_usec")

    def enter(self) -> None:
        """Move the calling process into the group (run in the jail's process before it executes)."""
        for directory in set(self.directories.values()):
            (directory / "cgroup.procs").write_text(str(os.getpid()))

    def kill_all(self) -> None:
        """SIGKILL every process in the group until none is left (forks included)."""
        procs = next(iter(self.directories.values())) / "cgroup.procs"
        for _ in range(1000):
            pids = procs.read_text().split()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.002)

    def remove(self) -> None:
        """Remove the group once its last process is gone (dying processes hold it for a moment)."""
        if self._cpu_fd is not None:
            os.close(self._cpu_fd)
            self._cpu_fd = None
        for directory in set(self.directories.values()):
            for _ in range(500):
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    self.kill_all()
                    time.sleep(0.01)


def _own_cgroups() -> dict[str, str]:
    """{controller: this process's group path} from /proc/self/cgroup; v2's line is keyed ''."""
    groups = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            groups[controller] = path
    return groups


def _cgroup_mounts() -> dict[str, Path]:
    """{controller: mount point} for v1 hierarchies, and {'': mount point} for the v2 one."""
    mounts = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, _, after = line.partition(" - ")
        fstype, _, options = after.split(" ", 2)
        point = Path(before.split()[4])
        if fstype == "cgroup2":
            mounts.setdefault("", point)
        elif fstype == "cgroup":
            for option in options.split(","):
                mounts.setdefault(option, point)
    return mounts


def create_cgroup(name: str, limits: Limits) -> Cgroup | None:
    """A new group for one jail under the harness's own, with its limits set; None where this
    process may not create one (not root, no delegation) or the controllers are missing."""
    own, mounts = _own_cgroups(), _cgroup_mounts()
    if all(c in mounts for c in ("memory", "pids", "cpuacct")):
        directories = {c: mounts[c] / own[c].lstrip("/") / name for c in ("memory", "pids", "cpuacct")}
        settings = {("memory", "memory.limit_in_bytes"): limits.memory_bytes + limits.tmpfs_bytes,
                    ("pids", "pids.max"): limits.processes + 4}  # + the bubblewraps, setpriv's exec, the zygote
        version = 1
    elif "" in mounts and {"memory", "pids"} <= set(_v2_controllers(mounts[""] / own[""].lstrip("/"))):
        base = mounts[""] / own[""].lstrip("/")
        directories = dict.fromkeys(("memory", "pids", "cpu"), base / name)
        settings = {("memory", "memory.max"): limits.memory_bytes + limits.tmpfs_bytes,
                    ("memory", "memory.swap.max"): 0, ("pids", "pids.max"): limits.processes + 4}
        version = 2
    else:
        return None
    try:
        for directory in set(directories.values()):
            directory.mkdir()
        for (controller, setting), value in settings.items():
            path = directories[controller] / setting
            if path.exists():
                path.write_text(str(value))
    except OSError:
        Cgroup(version, directories).remove()
        return None
    return Cgroup(version, directories, tuple(sorted(directories)))


def _v2_controllers(base: Path) -> list[str]:
    """Controllers a v2 group's children can use: enabled in its subtree_control (enabling them
    needs the group to hold no process itself, which a harness inside it does: then none)."""
    try:
        enabled = (base / "cgroup.subtree_control").read_text().split()
        if not {"memory", "pids"} <= set(enabled):
            (base / "cgroup.subtree_control").write_text("+memory +pids")
            enabled = (base / "cgroup.subtree_control").read_text().split()
        return enabled
    except OSError:
        return []


# ---------------------------------------------------------------- file system


def _allowed_view(policy: JailPolicy) -> list[str]:
    """bwrap arguments that build the jail's file system from the allow-list (all read-only)."""
    if not policy.allow_list:
        return ["--ro-bind", "/", "/"]
    args = []
    for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / top
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    args += ["--ro-bind", "/usr", "/usr"]
    for path in ("/etc/ld.so.cache", "/etc/localtime"):
        if os.path.exists(path):
            args += ["--ro-bind", path, path]
    for prefix in interpreter_prefixes():
        args += [*_traversable_parents(prefix), "--ro-bind", prefix, prefix]
    for hidden in _site_directories(["/usr", *interpreter_prefixes()]):
        args += ["--tmpfs", hidden, "--remount-ro", hidden]
    for name, path in package_paths(policy.packages).items():
        args += [*_traversable_parents(f"{SITE}/{name}"), "--ro-bind", path, f"{SITE}/{name}"]
    return args


def _traversable_parents(path: str) -> list[str]:
    """Directories leading to a bind, made 0755: bubblewrap creates them 0700 (root's), which the
    unprivileged uid of the inner jail could not cross (an interpreter installed under /root)."""
    args = []
    parent = os.path.dirname(path)
    while parent != "/":
        args[:0] = ["--perms", "0755", "--dir", parent]
        parent = os.path.dirname(parent)
    return args


def interpreter_prefixes() -> list[str]:
    """The installation prefixes of this interpreter (where its executable and standard library are)."""
    executable = os.path.realpath(sys.executable)
    prefixes = {os.path.realpath(sys.base_prefix)}
    if not any(executable.startswith(prefix + "/") for prefix in prefixes):
        prefixes.add(os.path.dirname(executable))
    return sorted(prefixes)


def _site_directories(roots: list[str]) -> list[str]:
    """Every third-party package directory under the bound trees: hidden behind an empty read-only
    tmpfs, so only the allowed packages (bound under SITE) are importable."""
    patterns = ("lib*/python3*/site-packages", "lib*/python3*/dist-packages", "lib/python3/dist-packages",
                "local/lib/python3*/dist-packages", "local/lib/python3*/site-packages")
    found = {os.path.realpath(path) for root in roots for pattern in patterns for path in Path(root).glob(pattern)
             if path.is_dir()}
    return sorted(found)


def package_paths(names: tuple[str, ...]) -> dict[str, str]:
    """{name in the jail's site directory: host path} for each allowed package (and the shared
    libraries its wheel keeps beside it, e.g. numpy.libs); found without importing them."""
    paths = {}
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin and not spec.submodule_search_locations:
            raise ValueError(f"package {name!r} is not installed beside the harness")
        if spec.submodule_search_locations:
            path = next(iter(spec.submodule_search_locations))
            paths[name] = path
            companion = os.path.join(os.path.dirname(path), f"{name}.libs")
            if os.path.isdir(companion):
                paths[f"{name}.libs"] = companion
        else:
            paths[os.path.basename(spec.origin)] = spec.origin
    return paths


# --------------------------------------------------------------------- the jail


def jail_command(policy: JailPolicy, limits: Limits, seccomp_fd: int | None, command: list[str]) -> list[str]:
    """The full command line that runs `command` in the jail."""
    # --as-pid-1: the zygote is the namespace's init. bubblewrap's own init would be a process of the
    # program's uid that is dumpable: a program could rewrite it through /proc/1/mem and outlive its job.
    inner = [BWRAP, "--unshare-user", "--unshare-pid", "--as-pid-1", "--die-with-parent", "--new-session"]
    if policy.disable_userns:
        inner += ["--disable-userns"]
    if policy.drop_capabilities:
        inner += ["--cap-drop", "ALL"]
    else:
        inner += ["--cap-add", "ALL"]
    if seccomp_fd is not None:
        inner += ["--seccomp", str(seccomp_fd)]
    tail = ["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev",
            "--size", str(limits.tmpfs_bytes), "--tmpfs", "/tmp", "--remount-ro", "/",
            "--clearenv", "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "HOME", "/tmp",
            "--setenv", "LANG", "C.UTF-8", "--chdir", "/tmp", "--", *command]
    namespaces = ["--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if not root_harness() or not policy.drop_uid:
        # One bubblewrap; as root without the uid drop it keeps host uid 0 (a weakened jail, for tests).
        return [*inner, *namespaces, *_allowed_view(policy), *tail]
    # As root: the outer bubblewrap (root) builds the view; the inner one runs as nobody. The host's
    # /proc is bound only so that the inner, unprivileged bubblewrap may mount its own over it.
    outer = [BWRAP, *namespaces, "--die-with-parent", *_allowed_view(policy), "--dev", "/dev",
             "--bind", "/proc", "/proc", "--dir", "/tmp", "--remount-ro", "/"]
    return [*outer, "--", *_drop_privileges(), "--", *inner, "--ro-bind", "/", "/", *tail]


def root_harness() -> bool:
    return os.geteuid() == 0


def missing_tools() -> list[str]:
    """The programs a jail needs that this machine lacks (empty when it can build one)."""
    needed = [BWRAP] + ([SETPRIV] if root_harness() else [])
    return [tool for tool in needed if shutil.which(tool) is None]


class Jail:
    """One running jail around a command, with its cgroup.

    `command(mode, tmp, site)` gives the command line to run, told whether it is jailed ("jail") or not
    ("rlimits": `--sandbox rlimits`, no namespaces, as `nobody` when root, in a private temporary
    directory `tmp`), where its private /tmp is, and the directory of its allowed packages.
    """

    def __init__(self, policy: JailPolicy, limits: Limits, command, pass_fds: tuple[int, ...], name: str,
                 jailed: bool = True):
        self.cgroup = create_cgroup(name, limits) if policy.cgroups else None
        self.jailed = jailed
        self._tempdir = None
        if not jailed:
            self._tempdir = tempfile.mkdtemp(prefix="moecoder-rlimits-")
            tmp, site = os.path.join(self._tempdir, "tmp"), os.path.join(self._tempdir, "site")
            os.chmod(self._tempdir, 0o755)
            os.mkdir(tmp, 0o700)
            os.mkdir(site, 0o755)
            for name, path in package_paths(policy.packages).items():  # the allow-list, as in the jail
                os.symlink(path, os.path.join(site, name))
            if root_harness():
                os.chown(tmp, NOBODY, NOBODY)
            # Not root: no uid to drop to, but no new privileges either (setuid programs give none).
            drop = _drop_privileges() if root_harness() else [SETPRIV, "--no-new-privs"]
            argv = [*drop, *command("rlimits", tmp, site)]
            self._start(argv, pass_fds, cwd=tmp)
            return
        filter_fd = None
        if policy.seccomp:
            filter_fd = os.memfd_create("moecoder-seccomp", 0)
            os.write(filter_fd, seccomp.filter_bytes())
            os.lseek(filter_fd, 0, os.SEEK_SET)
        try:
            argv = jail_command(policy, limits, filter_fd, command("jail", "/tmp", SITE))
            self._start(argv, (*pass_fds, *([filter_fd] if filter_fd is not None else [])), cwd="/")
        finally:
            if filter_fd is not None:
                os.close(filter_fd)

    def _start(self, argv: list[str], pass_fds: tuple[int, ...], cwd: str) -> None:
        # stderr is a pipe read only until the jail is ready (`seal_stderr`): afterwards a program that
        # reaches it (bubblewrap's init holds it) writes into a closed pipe, not into a file of the host.
        stderr_r, stderr_w = os.pipe()
        self._stderr, self._stderr_text = stderr_r, b""
        # A scrubbed environment: nothing of the harness's (API keys...) reaches the program.
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": cwd}
        self.process = subprocess.Popen(argv, pass_fds=pass_fds, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=stderr_w, start_new_session=True,
                                        cwd=cwd, env=env, preexec_fn=self._join_cgroup)
        os.close(stderr_w)
        os.set_blocking(stderr_r, False)

    def _join_cgroup(self) -> None:
        """In the jail's first process, before it executes, so that every descendant is counted."""
        if self.cgroup is not None:
            self.cgroup.enter()

    @property
    def isolation(self) -> str:
        """What held for this jail, in words (every result row carries it)."""
        if not self.jailed:
            user = "uid nobody" if root_harness() else "the harness's uid"
            return f"rlimits only (NO namespaces, NO file-system isolation; {user}, no capabilities); {self.resources}"
        return f"bwrap (userns, no capabilities, seccomp, allow-listed files, no network); {self.resources}"

    @property
    def resources(self) -> str:
        if self.cgroup is None:
            return "rlimits per process (no cgroup: memory and CPU per process, processes by polling)"
        return f"cgroup v{self.cgroup.version} ({', '.join(self.cgroup.controllers)}) over the whole process tree"

    def host_uids(self) -> set[int]:
        """Host uids of the jail's processes (read from the host's /proc); in a jail, those below the
        first bubblewrap, which as root is root's own."""
        uids, stack = set(), [self.process.pid]
        while stack:
            pid = stack.pop()
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue
            if pid != self.process.pid or not self.jailed:
                uids.add(int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1]))
            stack.extend(int(child) for child in children)
        return uids

    def stderr_tail(self) -> str:
        """What the jail wrote to stderr before it was sealed (why it failed to start)."""
        if self._stderr is not None:
            try:
                while chunk := os.read(self._stderr, 1 << 16):
                    self._stderr_text = (self._stderr_text + chunk)[-2000:]
            except BlockingIOError:
                pass
        return self._stderr_text.decode("utf-8", "replace").strip()

    def seal_stderr(self) -> None:
        """Stop listening to the jail's stderr once it runs programs (see _start)."""
        if self._stderr is not None:
            os.close(self._stderr)
            self._stderr = None

    def close(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.cgroup is not None:
            self.cgroup.kill_all()
        self.process.wait()
        self.seal_stderr()
        if self.cgroup is not None:
            self.cgroup.remove()
        if self._tempdir:
            shutil.rmtree(self._tempdir, ignore_errors=True)


def _drop_privileges() -> list[str]:
    """setpriv: to `nobody`, no supplementary groups, empty capability sets, no new privileges."""
    return [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=-all",
            "--bounding-set=-all", "--no-new-privs"]


def harden_self() -> None:
    """No process of another uid may read this one's memory or /proc/PID/environ (PR_SET_DUMPABLE 0)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
