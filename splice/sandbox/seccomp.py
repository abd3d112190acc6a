"""A seccomp filter that denies what customer code never needs, built as classic BPF.

The filter is built once in the template and installed in each child with one prctl.
Denied calls fail with EPERM, so code that probes for them gets an error instead of
being killed; ``clone`` is denied only when it asks for new namespaces, and ``clone3``
fails with ENOSYS so that the C library falls back to ``clone``.
"""

from __future__ import annotations

import errno
import platform
import struct

# Calls denied with EPERM: debugging other processes, mounts and namespaces, kernel
# modules and eBPF, keyrings, perf events, the clock, swap, reboot and the like.
DENIED = (
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns",
    "mount_setattr", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree",
    "init_module", "finit_module", "delete_module", "create_module",
    "bpf", "perf_event_open", "userfaultfd", "fanotify_init",
    "keyctl", "add_key", "request_key",
    "reboot", "kexec_load", "kexec_file_load", "swapon", "swapoff", "acct",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "iopl", "ioperm", "syslog", "quotactl", "quotactl_fd", "vhangup", "lookup_dcookie",
    "open_by_handle_at", "name_to_handle_at", "sethostname", "setdomainname",
    "nfsservctl", "uselib", "ustat", "sysfs", "_sysctl",
)  # fmt: skip

_X86_64 = {
    "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "pidfd_getfd": 438,
    "kcmp": 312, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161,
    "unshare": 272, "setns": 308, "mount_setattr": 442, "fsopen": 430, "fsconfig": 431,
    "fsmount": 432, "fspick": 433, "move_mount": 429, "open_tree": 428, "init_module": 175,
    "finit_module": 313, "delete_module": 176, "create_module": 174, "bpf": 321,
    "perf_event_open": 298, "userfaultfd": 323, "fanotify_init": 300, "keyctl": 250,
    "add_key": 248, "request_key": 249, "reboot": 169, "kexec_load": 246,
    "kexec_file_load": 320, "swapon": 167, "swapoff": 168, "acct": 163,
    "settimeofday": 164, "clock_settime": 227, "clock_adjtime": 305, "adjtimex": 159,
    "iopl": 172, "ioperm": 173, "syslog": 103, "quotactl": 179, "quotactl_fd": 443,
    "vhangup": 153, "lookup_dcookie": 212, "open_by_handle_at": 304,
    "name_to_handle_at": 303, "sethostname": 170, "setdomainname": 171,
    "nfsservctl": 180, "uselib": 134, "ustat": 136, "sysfs": 139, "_sysctl": 156,
    "clone": 56, "clone3": 435,
}  # fmt: skip

_AARCH64 = {
    "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "pidfd_getfd": 438,
    "kcmp": 272, "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51, "unshare": 97,
    "setns": 268, "mount_setattr": 442, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
    "fspick": 433, "move_mount": 429, "open_tree": 428, "init_module": 105,
    "finit_module": 273, "delete_module": 106, "bpf": 280, "perf_event_open": 241,
    "userfaultfd": 282, "fanotify_init": 262, "keyctl": 219, "add_key": 217,
    "request_key": 218, "reboot": 142, "kexec_load": 104, "kexec_file_load": 294,
    "swapon": 224, "swapoff": 225, "acct": 89, "settimeofday": 170, "clock_settime": 112,
    "clock_adjtime": 266, "adjtimex": 171, "syslog": 116, "quotactl": 60,
    "quotactl_fd": 443, "vhangup": 58, "lookup_dcookie": 18, "open_by_handle_at": 265,
    "name_to_handle_at": 264, "sethostname": 161, "setdomainname": 162,
    "nfsservctl": 42, "clone": 220, "clone3": 435,
}  # fmt: skip

_ARCHITECTURES = {
    "x86_64": (0xC000003E, _X86_64),
    "aarch64": (0xC00000B7, _AARCH64),
}

_LD_W_ABS = 0x20
_JEQ = 0x15
_JGE = 0x35
_AND = 0x54
_RET = 0x06
_ALLOW = 0x7FFF0000
_ERRNO = 0x00050000
_KILL_PROCESS = 0x80000000
_X32_SYSCALL_BIT = 0x40000000
_NAMESPACE_FLAGS = (
    0x7E020000  # CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
)


def available() -> bool:
    return platform.machine() in _ARCHITECTURES


def build_filter() -> bytes:
    """Return the filter as ``struct sock_filter`` entries for this machine's architecture."""
    arch, numbers = _ARCHITECTURES[platform.machine()]
    denied = sorted({numbers[name] for name in DENIED if name in numbers})
    # Instructions as (code, true target, false target, k); targets are labels or None.
    program: list[tuple[int, str | None, str | None, int]] = [
        (_LD_W_ABS, None, None, 4),  # seccomp_data.arch
        (_JEQ, None, "kill", arch),
        (_LD_W_ABS, None, None, 0),  # seccomp_data.nr
    ]
    if arch == 0xC000003E:
        program.append((_JGE, "deny", None, _X32_SYSCALL_BIT))
    program += [(_JEQ, "deny", None, number) for number in denied]
    program += [
        (_JEQ, "clone", None, numbers["clone"]),
        (_JEQ, "nosys", None, numbers["clone3"]),
        (_RET, None, None, _ALLOW),
    ]
    labels = {
        "clone": len(program),
        "deny": len(program) + 4,
        "nosys": len(program) + 5,
        "kill": len(program) + 6,
    }
    program += [
        (_LD_W_ABS, None, None, 16),  # low 32 bits of the first argument: the flags
        (_AND, None, None, _NAMESPACE_FLAGS),
        (_JEQ, "allow", "deny", 0),
        (_RET, None, None, _ALLOW),  # allow
        (_RET, None, None, _ERRNO | errno.EPERM),  # deny
        (_RET, None, None, _ERRNO | errno.ENOSYS),  # nosys
        (_RET, None, None, _KILL_PROCESS),  # kill: a call made for another architecture
    ]
    labels["allow"] = labels["clone"] + 3
    encoded = bytearray()
    for index, (code, true, false, k) in enumerate(program):
        jt = labels[true] - index - 1 if true else 0
        jf = labels[false] - index - 1 if false else 0
        if not (0 <= jt < 256 and 0 <= jf < 256):
            raise ValueError("seccomp filter jump out of range")
        encoded += struct.pack("=HBBI", code, jt, jf, k)
    return bytes(encoded)
