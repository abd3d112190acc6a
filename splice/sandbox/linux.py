"""Thin ctypes wrappers for the Linux system calls that confinement needs.

Each function raises OSError with the errno on failure. Numbers are for x86_64 and
aarch64 as noted; other architectures report the feature as unavailable.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import struct

_libc = ctypes.CDLL(None, use_errno=True)

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

_MACHINE = platform.machine()
# Landlock system calls have the same numbers on every architecture that has them.
_SYSCALLS = {
    "x86_64": {
        "pivot_root": 155,
        "clone": 56,
        "landlock_create_ruleset": 444,
        "landlock_add_rule": 445,
        "landlock_restrict_self": 446,
    },
    "aarch64": {
        "pivot_root": 41,
        "clone": 220,
        "landlock_create_ruleset": 444,
        "landlock_add_rule": 445,
        "landlock_restrict_self": 446,
    },
}.get(_MACHINE, {})


def _check(result: int) -> int:
    if result < 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))
    return result


def _syscall(name: str, *args: object) -> int:
    number = _SYSCALLS.get(name)
    if number is None:
        raise OSError(38, f"{name} is not known on {_MACHINE}")  # ENOSYS
    return _check(_libc.syscall(number, *args))


_python_libc = ctypes.PyDLL(None, use_errno=True)  # calls keep the GIL held


def fork_with_namespaces(flags: int) -> int:
    """Fork like os.fork, with the child in the new namespaces that ``flags`` ask for.

    A process can enter a new pid namespace for its children only once with unshare(),
    so each child is made with a raw clone() instead, wrapped in the same interpreter
    bookkeeping as os.fork. The C library's fork handlers do not run, so call this only
    from a process without threads.
    """
    number = _SYSCALLS.get("clone")
    if number is None:
        raise OSError(38, f"clone is not known on {_MACHINE}")
    api = ctypes.pythonapi
    api.PyOS_BeforeFork()
    pid = _python_libc.syscall(
        number,
        ctypes.c_ulong(flags | 17),
        None,
        None,
        None,
        ctypes.c_ulong(0),  # 17: SIGCHLD
    )
    if pid == 0:
        api.PyOS_AfterFork_Child()
        return 0
    error = ctypes.get_errno()
    api.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(error, os.strerror(error))
    return int(pid)


def write_id_maps(pid: int, uid_map: str, gid_map: str, *, deny_setgroups: bool) -> None:
    """Write the uid and gid maps of a child's new user namespace, from its parent."""
    if deny_setgroups:
        with open(f"/proc/{pid}/setgroups", "w") as file:
            file.write("deny")
    with open(f"/proc/{pid}/uid_map", "w") as file:
        file.write(uid_map)
    with open(f"/proc/{pid}/gid_map", "w") as file:
        file.write(gid_map)


_CAPABILITY_VERSION_3 = 0x20080522


def drop_capabilities() -> None:
    """Clear the permitted, effective and inheritable capabilities of the calling thread."""
    number = {"x86_64": 126, "aarch64": 91}.get(_MACHINE)
    if number is None:
        raise OSError(38, f"capset is not known on {_MACHINE}")
    header = struct.pack("Ii", _CAPABILITY_VERSION_3, 0)
    data = bytes(24)  # two empty __user_cap_data_struct entries
    _check(_libc.syscall(number, ctypes.c_char_p(header), ctypes.c_char_p(data)))


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags))


def mount(
    source: str, target: str, fstype: str | None, flags: int, data: str | None = None
) -> None:
    _check(
        _libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        )
    )


def umount(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(target.encode(), flags))


def pivot_root(new_root: str, put_old: str) -> None:
    _syscall("pivot_root", new_root.encode(), put_old.encode())


def sethostname(name: str) -> None:
    encoded = name.encode()
    _check(_libc.sethostname(encoded, len(encoded)))


def prctl(option: int, argument: int | ctypes.c_void_p = 0) -> None:
    _check(_libc.prctl(option, argument, 0, 0, 0))


def set_no_new_privs() -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1)


# -- Landlock ------------------------------------------------------------------------------

LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1

# Filesystem access rights by ABI version (see the kernel's uapi/linux/landlock.h).
ACCESS_FS_EXECUTE = 1 << 0
ACCESS_FS_WRITE_FILE = 1 << 1
ACCESS_FS_READ_FILE = 1 << 2
ACCESS_FS_READ_DIR = 1 << 3
ACCESS_FS_REMOVE_DIR = 1 << 4
ACCESS_FS_REMOVE_FILE = 1 << 5
ACCESS_FS_MAKE_CHAR = 1 << 6
ACCESS_FS_MAKE_DIR = 1 << 7
ACCESS_FS_MAKE_REG = 1 << 8
ACCESS_FS_MAKE_SOCK = 1 << 9
ACCESS_FS_MAKE_FIFO = 1 << 10
ACCESS_FS_MAKE_BLOCK = 1 << 11
ACCESS_FS_MAKE_SYM = 1 << 12
ACCESS_FS_REFER = 1 << 13  # ABI 2
ACCESS_FS_TRUNCATE = 1 << 14  # ABI 3
ACCESS_FS_IOCTL_DEV = 1 << 15  # ABI 5

READ_ACCESS = ACCESS_FS_EXECUTE | ACCESS_FS_READ_FILE | ACCESS_FS_READ_DIR


def landlock_abi() -> int:
    """Return the kernel's Landlock ABI version, or 0 when Landlock is unavailable."""
    try:
        return _syscall("landlock_create_ruleset", None, 0, LANDLOCK_CREATE_RULESET_VERSION)
    except OSError:
        return 0


def landlock_handled_access(abi: int) -> int:
    handled = (1 << 13) - 1
    if abi >= 2:
        handled |= ACCESS_FS_REFER
    if abi >= 3:
        handled |= ACCESS_FS_TRUNCATE
    if abi >= 5:
        handled |= ACCESS_FS_IOCTL_DEV
    return handled


def landlock_ruleset(abi: int) -> int:
    """Create a ruleset that handles every file system right of this ABI; return its fd."""
    handled = landlock_handled_access(abi)
    attributes = struct.pack("QQQ", handled, 0, 0) if abi >= 4 else struct.pack("Q", handled)
    buffer = ctypes.create_string_buffer(attributes, len(attributes))
    return _syscall("landlock_create_ruleset", buffer, len(attributes), 0)


def landlock_allow(ruleset: int, path: str, access: int, abi: int) -> None:
    """Allow ``access`` beneath ``path``; a path that does not exist is skipped."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        if not os.path.isdir(path):
            access &= (
                ACCESS_FS_EXECUTE
                | ACCESS_FS_WRITE_FILE
                | ACCESS_FS_READ_FILE
                | (ACCESS_FS_TRUNCATE | ACCESS_FS_IOCTL_DEV)
            )
        rule = struct.pack("=Qi", access & landlock_handled_access(abi), fd)
        rule_buffer = ctypes.create_string_buffer(rule, len(rule))
        _syscall("landlock_add_rule", ruleset, LANDLOCK_RULE_PATH_BENEATH, rule_buffer, 0)
    finally:
        os.close(fd)


def landlock_enforce(ruleset: int) -> None:
    """Restrict the calling thread (and its future children) to the ruleset's rules."""
    try:
        _syscall("landlock_restrict_self", ruleset, 0)
    finally:
        os.close(ruleset)


# -- seccomp --------------------------------------------------------------------------------


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


# Built programs by their bytes: the template builds one before forking, so a child only
# makes the system call.
_programs: dict[bytes, tuple[_SockFprog, ctypes.Array[ctypes.c_char]]] = {}


def prepare_seccomp_program(program: bytes) -> None:
    """Build the kernel structure for ``program`` ahead of :func:`load_seccomp_program`."""
    if program not in _programs:
        filters = ctypes.create_string_buffer(program, len(program))
        fprog = _SockFprog(len(program) // 8, ctypes.cast(filters, ctypes.c_void_p))
        _programs[program] = (fprog, filters)  # the buffer must live as long as the struct


def load_seccomp_program(program: bytes) -> None:
    """Install a classic BPF seccomp filter given as raw ``struct sock_filter`` entries."""
    prepare_seccomp_program(program)
    fprog, _ = _programs[program]
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0))
