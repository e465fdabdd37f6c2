"""The seccomp filter of the evaluation jail.

bubblewrap's ``--seccomp FD`` loads a compiled classic-BPF program (an array of
``struct sock_filter``) into every process of the jail. This module builds that
program with libseccomp (through the ``pyseccomp`` ctypes binding, which needs
the ``libseccomp2`` shared library) for the machine's native architecture.

The filter allows every system call except the ones a program under test has no
business making, which are the kernel's attack surface for leaving the jail or
reaching the harness:

- ``REFUSED`` (errno ``EPERM``): mounts and root changes, access to other
  processes (ptrace, process_vm_*, kcmp, pidfd_getfd), namespaces (unshare,
  setns), kernel keyrings, eBPF, perf, userfaultfd, io_uring (its requests
  bypass seccomp), SysV IPC and POSIX message queues, extended attributes (both
  would outlive the job), and machine administration
  (modules, kexec, reboot, swap, clocks, accounting, quotas, I/O ports, file
  handles, the kernel log).
- ``clone`` with any namespace flag (``EPERM``); ``clone3`` fails with
  ``ENOSYS``, because a filter cannot read its flags (they sit in a struct in
  memory) and libc then falls back to ``clone``, whose flags it can.
- ``ioctl`` ``TIOCSTI``/``TIOCLINUX`` (``EPERM``): typing into a terminal the
  jail might share with the harness (CVE-2017-5226).
- ``prlimit64``, ``setpriority``, ``ioprio_set`` and ``sched_set*`` on any
  process but the caller (``EPERM``): the same uid may lower another process's
  limits, priority or CPUs, and later programs would inherit the zygote's.
- every system call number newer than the newest this libseccomp knows
  (``ENOSYS``, as if the kernel were older): a syscall added after the library
  (e.g. ``open_tree_attr``, Linux 6.15, with libseccomp 2.5.4) cannot slip past
  a list of names.
- calls made through another ABI (``int 0x80`` or x32 on x86-64) kill the
  process, so the filter cannot be bypassed by a second syscall table.

Sources: seccomp(2), seccomp_rule_add(3), bwrap(1), and the filters Docker
(default profile) and Flatpak apply for the same purpose.
"""

from __future__ import annotations

import errno
import functools
import os

try:
    import pyseccomp as seccomp
except RuntimeError as error:  # pyseccomp's answer when the shared library is missing
    raise ImportError("libseccomp is not installed (Debian/Ubuntu: apt-get install libseccomp2)") from error

REFUSED: tuple[str, ...] = (
    # file system view
    "mount", "umount2", "pivot_root", "chroot", "mount_setattr",
    "move_mount", "open_tree", "fsopen", "fsmount", "fsconfig", "fspick",
    "name_to_handle_at", "open_by_handle_at",
    # other processes
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "process_madvise", "migrate_pages", "move_pages",
    # namespaces
    "unshare", "setns",
    # kernel objects and interfaces
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    # SysV IPC; `ipc` multiplexes them where the architecture has it
    "shmget", "shmat", "shmdt", "shmctl", "semget", "semop", "semtimedop",
    "semctl", "msgget", "msgsnd", "msgrcv", "msgctl", "ipc",
    # state that would outlive a job in the jail: POSIX message queues (its IPC namespace lasts as
    # long as the jail) and extended attributes (of /tmp, which the zygote keeps across jobs)
    "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify", "mq_getsetattr",
    "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr", "fremovexattr",
    # machine administration
    "kexec_load", "kexec_file_load", "init_module", "finit_module",
    "delete_module", "reboot", "swapon", "swapoff", "syslog", "acct",
    "quotactl", "quotactl_fd", "iopl", "ioperm", "settimeofday",
    "clock_settime", "clock_adjtime", "adjtimex",
)

# Flags of clone(2) that create a namespace. CLONE_NEWTIME is absent on purpose:
# clone() reads that bit as part of the exit signal, and only clone3 and
# unshare (both refused whole) accept it.
CLONE_NAMESPACE_FLAGS: dict[str, int] = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}

TTY_INJECTION_IOCTLS: dict[str, int] = {"TIOCSTI": 0x5412, "TIOCLINUX": 0x541C}

# Calls that change another process's limits, priority, scheduling or CPUs, which the same uid is
# enough for: a program could lower its zygote's RLIMIT_AS or nice value, and every later program of
# the jail would inherit them. Allowed on the caller itself only. name -> {argument: the only value
# allowed}: the pid (0: the caller), and for setpriority/ioprio_set which kind of target it names
# (PRIO_PROCESS 0, IOPRIO_WHO_PROCESS 1: a process, not a group or a user).
SELF_ONLY: dict[str, dict[int, int]] = {
    "prlimit64": {0: 0}, "sched_setscheduler": {0: 0}, "sched_setparam": {0: 0}, "sched_setattr": {0: 0},
    "sched_setaffinity": {0: 0}, "setpriority": {0: 0, 1: 0}, "ioprio_set": {0: 1, 1: 0},
}

# Linux numbers system calls below this on every architecture it supports
# (x86-64's x32 range starts at 512 but needs the x32 bit, which kills here).
_SYSCALL_NUMBER_LIMIT = 1024


def syscall_number(name: str) -> int | None:
    """The native number of system call ``name``, or None where this
    architecture (or this libseccomp) has no such call."""
    number = seccomp.resolve_syscall(seccomp.Arch.NATIVE, name)
    return number if number >= 0 else None


@functools.cache
def newest_known() -> int:
    """The highest native system call number libseccomp can name."""
    newest = 0
    for number in range(_SYSCALL_NUMBER_LIMIT):
        try:
            seccomp.resolve_syscall(seccomp.Arch.NATIVE, number)
        except ValueError:
            continue
        newest = number
    return newest


def _clone_flags_argument() -> int:
    # s390 swaps clone's first two arguments (stack first, flags second).
    return 1 if seccomp.system_arch() in (seccomp.Arch.S390, seccomp.Arch.S390X) else 0


def _rules(sf: seccomp.SyscallFilter, refusal: int) -> None:
    deny = seccomp.ERRNO(refusal)
    for name in REFUSED:
        if syscall_number(name) is not None:
            sf.add_rule(deny, name)
    # Rules for one call are ORed: each flag gets its own masked test.
    flags = _clone_flags_argument()
    for flag in CLONE_NAMESPACE_FLAGS.values():
        sf.add_rule(deny, "clone", seccomp.Arg(flags, seccomp.MASKED_EQ, flag, flag))
    for name, allowed in SELF_ONLY.items():
        if syscall_number(name) is not None:
            for argument, value in allowed.items():
                sf.add_rule(deny, name, seccomp.Arg(argument, seccomp.NE, value))
    if syscall_number("clone3") is not None:
        sf.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    # The kernel reads the request as an unsigned int: compare the low 32 bits.
    for request in TTY_INJECTION_IOCTLS.values():
        sf.add_rule(deny, "ioctl", seccomp.Arg(1, seccomp.MASKED_EQ, 0xFFFFFFFF, request))
    for number in range(newest_known() + 1, _SYSCALL_NUMBER_LIMIT):
        sf.add_rule(seccomp.ERRNO(errno.ENOSYS), number)


@functools.cache
def filter_bytes(refusal: int = errno.EPERM) -> bytes:
    """The BPF program for the native architecture, ready for ``bwrap --seccomp``.

    ``refusal`` is the errno the refused calls get (EPERM, what the kernel
    answers a call the caller lacks the privilege for). Raises OSError when
    libseccomp rejects the filter.
    """
    sf = seccomp.SyscallFilter(seccomp.ALLOW)
    sf.set_attr(seccomp.Attr.ACT_BADARCH, seccomp.KILL_PROCESS)
    try:  # a binary search over call numbers instead of ~600 comparisons in a row (libseccomp >= 2.5)
        sf.set_attr(seccomp.Attr.CTL_OPTIMIZE, 2)
    except OSError:
        pass
    _rules(sf, refusal)
    fd = os.memfd_create("moecoder-seccomp", os.MFD_CLOEXEC)
    with open(fd, "w+b") as program:
        sf.export_bpf(program)
        program.seek(0)
        return program.read()


def write_filter(fd: int, refusal: int = errno.EPERM) -> None:
    """Write the whole program to ``fd`` (e.g. a pipe's write end; bwrap reads
    ``--seccomp FD`` to its end, so each bwrap needs its own descriptor)."""
    program = memoryview(filter_bytes(refusal))
    while program:
        program = program[os.write(fd, program):]
