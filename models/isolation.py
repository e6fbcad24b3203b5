"""What the upload sandbox's child does to itself before it reads an untrusted model (Linux; elsewhere, nothing).

Each step is taken where the platform allows it and reported either way (`Isolation`), so the parent can log
what a given machine gives:

    network     its own empty network namespace (`unshare(CLONE_NEWNET)`: no interface but a loopback that is
                down; needs root or CAP_SYS_ADMIN, or unprivileged user namespaces, which Docker's default seccomp
                profile forbids), and in any case a seccomp filter that refuses `socket()` for
                every family but AF_UNIX, and `io_uring_setup` (x86-64 and arm64; needs no privilege)
    user        `nobody`/`nogroup` with no supplementary groups when started as root: the model store's files
                (mode 0600) and everything else only root may touch are out of reach. Skipped where nobody could
                not read the Python installation, the packages or the code the analysis goes on to import (a
                Python under /root, as pyenv installs it)
    parent      SIGKILL when the process that started it dies (`PR_SET_PDEATHSIG`, set after the user change,
                which clears it)
The environment is the parent's business (`models.sandbox` passes an allowlist); resource caps are set by
`models.sandbox_child` first.
"""

from __future__ import annotations

import ctypes
import os
import platform
import signal
import struct
from dataclasses import asdict, dataclass

CLONE_NEWNET, CLONE_NEWUSER = 0x40000000, 0x10000000
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
AF_UNIX, EACCES = 1, 13
# (AUDIT_ARCH_*, socket, io_uring_setup, seccomp) of the architectures the filter knows
SYSCALLS = {"x86_64": (0xC000003E, 41, 425, 317), "aarch64": (0xC00000B7, 198, 425, 277)}
SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC = 1, 1
LD_W_ABS, JEQ_K, JGE_K, RET_K = 0x20, 0x15, 0x35, 0x06
SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO = 0x7FFF0000, 0x00050000


@dataclass
class Isolation:
    """Which steps were taken; each is a short word, or why it was not ("skipped: <reason>")."""

    network_namespace: str = "skipped: not Linux"
    socket_filter: str = "skipped: not Linux"
    user: str = "skipped: not Linux"

    def as_dict(self) -> dict:
        return asdict(self)


def isolate(needed: list[str]) -> Isolation:
    """Take every step the platform allows, in the order that keeps each possible (see the module docstring);
    `needed` are the folders the process must still read as nobody. Call it before anything starts a thread."""
    report = Isolation()
    if platform.system() != "Linux":
        return report
    libc = ctypes.CDLL(None, use_errno=True)
    report.network_namespace = _own_network(libc)
    report.user = _drop_to_nobody(needed)
    _die_with_parent(libc)
    report.socket_filter = _refuse_sockets(libc)
    return report


def _own_network(libc) -> str:
    """A network namespace of its own; without privileges, inside a user namespace of its own where the kernel
    lets unprivileged users make one (file access stays that of the same user)."""
    if libc.unshare(CLONE_NEWNET) == 0:
        return "own empty namespace"
    refused = os.strerror(ctypes.get_errno())
    if os.geteuid() != 0 and libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0:
        return "own empty namespace (in a user namespace)"
    return f"skipped: unshare(CLONE_NEWNET) refused ({refused})"


def _drop_to_nobody(needed: list[str]) -> str:
    if os.geteuid() != 0:
        return f"unchanged: not root (uid {os.geteuid()})"
    import grp
    import pwd

    closed = next((path for path in needed if not _open_to_others(path)), None)
    if closed is not None:
        return f"skipped: {closed} is not readable by other users, so nobody could not import from it"

    try:
        user = pwd.getpwnam("nobody")
        group = user.pw_gid
        for name in ("nogroup", "nobody"):
            try:
                group = grp.getgrnam(name).gr_gid
                break
            except KeyError:  # not on this system: the next name, else nobody's own group
                continue
        os.setgroups([])
        os.setgid(group)
        os.setuid(user.pw_uid)
    except (KeyError, OSError) as exc:
        return f"skipped: cannot become nobody ({exc})"
    return f"nobody (uid {user.pw_uid})"


def _open_to_others(folder: str) -> bool:
    """Whether a user other than the owner may list and read `folder`, and pass through each folder above it."""
    path = os.path.realpath(folder)
    try:
        if os.stat(path).st_mode & 0o005 != 0o005:
            return False
        while path != os.path.dirname(path):
            path = os.path.dirname(path)
            if not os.stat(path).st_mode & 0o001:
                return False
    except OSError:
        return False
    return True


def _die_with_parent(libc) -> None:
    """SIGKILL this process when the API that started it dies (no orphaned analyses)."""
    parent = os.getppid()
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the call
        os._exit(1)


def _refuse_sockets(libc) -> str:
    """A seccomp filter: `socket()` of any family but AF_UNIX, and `io_uring_setup`, fail with EACCES."""
    machine = platform.machine().lower()
    if machine not in SYSCALLS:
        return f"skipped: no filter for {machine}"
    arch, socket_nr, io_uring_nr, seccomp_nr = SYSCALLS[machine]
    deny, allow = 8, 9  # positions of the two returns below
    program = [
        (LD_W_ABS, 0, 0, 4),  # 0: A = seccomp_data.arch
        (JEQ_K, 0, allow - 2, arch),  # 1: another ABI → allow (the filter is for this one)
        (LD_W_ABS, 0, 0, 0),  # 2: A = seccomp_data.nr
        (JGE_K, deny - 4, 0, 0x40000000),  # 3: x32 system calls → deny
        (JEQ_K, deny - 5, 0, io_uring_nr),  # 4: io_uring can open sockets too → deny
        (JEQ_K, 0, allow - 6, socket_nr),  # 5: not socket() → allow
        (LD_W_ABS, 0, 0, 16),  # 6: A = the family (args[0], low half)
        (JEQ_K, allow - 8, 0, AF_UNIX),  # 7: AF_UNIX → allow
        (RET_K, 0, 0, SECCOMP_RET_ERRNO | EACCES),  # 8: deny
        (RET_K, 0, 0, SECCOMP_RET_ALLOW),  # 9: allow
    ]
    code = b"".join(struct.pack("HBBI", *instruction) for instruction in program)
    buffer = ctypes.create_string_buffer(code, len(code))

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = Program(len(program), ctypes.cast(buffer, ctypes.c_void_p))
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return f"skipped: no_new_privs refused ({os.strerror(ctypes.get_errno())})"
    # seccomp(2) with TSYNC: every thread of the process, should a library have started one already
    if libc.syscall(seccomp_nr, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, ctypes.byref(prog)) != 0:
        return f"skipped: seccomp refused ({os.strerror(ctypes.get_errno())})"
    return "socket() limited to AF_UNIX"
