"""Confinement of a sandboxed child: namespaces, a private root, limits, Landlock, seccomp.

The template computes a :class:`Plan` once: which protections this host supports, which
host paths children may read, and the seccomp program. Each child calls :func:`prepare`
while it waits as the spare, then :func:`enter` with its execution's scratch directory
and granted folders, before any customer code runs. Protections the host lacks are
skipped and reported, never faked.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from splice.sandbox import linux, seccomp

logger = logging.getLogger(__name__)

PROTECTIONS = (
    "user-namespace",
    "pid-namespace",
    "mount-namespace",
    "ipc-namespace",
    "uts-namespace",
    "private-root",
    "unprivileged-user",
    "no-new-privileges",
    "seccomp",
    "landlock",
    "rlimits",
    "cgroup-pids",
    "cgroup-memory",
)

# Files of /etc that name resolution, TLS and time zones need; the rest of /etc (where
# the platform's own configuration may live) stays invisible.
ETC_FILES = (
    "/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/host.conf",
    "/etc/gai.conf", "/etc/services", "/etc/protocols", "/etc/localtime",
    "/etc/ld.so.cache", "/etc/mime.types", "/etc/ssl", "/etc/ca-certificates",
    "/etc/pki", "/etc/passwd", "/etc/group",
)  # fmt: skip
INNER_ID = 1000  # the uid and gid customer code has inside its user namespace
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
DEVICES = ("null", "zero", "full", "random", "urandom")


@dataclass(frozen=True)
class Limits:
    """Resource limits of one execution; None means no limit."""

    cpu_seconds: int | None = None
    memory_bytes: int | None = 1024 * 1024 * 1024
    processes: int = 64
    open_files: int = 256
    file_size: int = 1024 * 1024 * 1024


@dataclass
class Plan:
    """The template's preparations for its children: protections, paths, limits, filters."""

    available: dict[str, bool]
    readable_paths: list[str]
    root_mount_point: str
    sandbox_uid: int
    sandbox_gid: int
    limits: Limits
    seccomp_program: bytes = b""
    landlock_abi: int = 0
    root: bool = False  # the template runs as root on the host
    cgroups: dict[str, str] = field(default_factory=dict)  # controller -> our parent cgroup

    @property
    def active(self) -> list[str]:
        return [name for name in PROTECTIONS if self.available.get(name)]

    @property
    def missing(self) -> list[str]:
        return [name for name in PROTECTIONS if not self.available.get(name)]

    def clone_flags(self) -> int:
        """Namespaces a child is created in (the others it enters itself)."""
        flags = linux.CLONE_NEWPID if self.available["pid-namespace"] else 0
        if self.available["user-namespace"]:
            flags |= linux.CLONE_NEWUSER
        return flags

    def map_ids(self, pid: int) -> None:
        """Write a new child's uid and gid maps (called in the template, right after clone)."""
        _write_id_maps(pid, root=self.root, uid=self.sandbox_uid, gid=self.sandbox_gid)

    def details(self) -> dict[str, str]:
        """Facts behind the protections, for ``splice doctor``."""
        return {
            "platform": f"{sys.platform} {os.uname().release}",
            "effective user": str(os.geteuid()),
            "sandbox user": str(self.sandbox_uid),
            "landlock ABI": str(self.landlock_abi or "unavailable"),
            "seccomp filter": f"{len(self.seccomp_program) // 8} instructions"
            if self.seccomp_program
            else "unavailable",
            "pids cgroup": self.cgroups.get("pids", "unavailable"),
            "memory cgroup": self.cgroups.get("memory", "unavailable"),
            "readable host paths": ", ".join(self.readable_paths),
        }


class ConfinementError(Exception):
    """A protection that the plan promised could not be applied in the child."""


# -- planning (in the template) ------------------------------------------------------------


def make_plan(
    *, limits: Limits, scratch_root: Path, extra_readable: Iterable[str] = (), uid: int = 65534
) -> Plan:
    """Probe this host and prepare what every child needs to confine itself quickly."""
    linux_host = sys.platform == "linux"
    root = linux_host and os.geteuid() == 0
    available = {name: False for name in PROTECTIONS}
    available["rlimits"] = True
    available["no-new-privileges"] = linux_host
    if linux_host:
        user_namespace = _probe_namespaces(user=True, root=root, uid=uid)
        namespaces_work = user_namespace or (
            root and _probe_namespaces(user=False, root=root, uid=uid)
        )
        available["user-namespace"] = user_namespace
        for name in ("pid-namespace", "mount-namespace", "ipc-namespace", "uts-namespace"):
            available[name] = namespaces_work
        available["private-root"] = namespaces_work
        available["unprivileged-user"] = root
    program = b""
    if linux_host and seccomp.available():
        program = seccomp.build_filter()
        linux.prepare_seccomp_program(program)
        available["seccomp"] = True
    abi = linux.landlock_abi() if linux_host else 0
    available["landlock"] = abi > 0
    cgroups = _prepare_cgroups() if root else {}
    available["cgroup-pids"] = "pids" in cgroups
    available["cgroup-memory"] = "memory" in cgroups
    mount_point = scratch_root / ".root"
    if available["private-root"]:
        mount_point.mkdir(parents=True, exist_ok=True)
    return Plan(
        available=available,
        readable_paths=_readable_paths(extra_readable, hidden=scratch_root),
        root_mount_point=str(mount_point),
        sandbox_uid=uid,
        sandbox_gid=uid,
        limits=limits,
        seccomp_program=program,
        landlock_abi=abi,
        cgroups=cgroups,
        root=root,
    )


def _probe_namespaces(*, user: bool, root: bool, uid: int) -> bool:
    """Fork a probe that enters new namespaces, since a kernel or container may forbid them."""
    flags = linux.CLONE_NEWPID | (linux.CLONE_NEWUSER if user else 0)
    ready_read, ready_write = os.pipe()
    try:
        pid = linux.fork_with_namespaces(flags)
    except OSError:
        os.close(ready_read)
        os.close(ready_write)
        return False
    if pid == 0:
        os.close(ready_write)
        os.read(ready_read, 1)  # wait for the id maps
        try:
            linux.unshare(linux.CLONE_NEWNS | linux.CLONE_NEWIPC | linux.CLONE_NEWUTS)
            linux.mount("none", "/", None, linux.MS_REC | linux.MS_PRIVATE)
            linux.mount("tmpfs", "/tmp", "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "size=64k")
            os.makedirs("/tmp/proc")
            linux.mount("proc", "/tmp/proc", "proc", linux.MS_NOSUID | linux.MS_NODEV)
            os._exit(0 if os.getpid() == 1 else 1)
        except OSError:
            os._exit(1)
    os.close(ready_read)
    try:
        if user:
            _write_id_maps(pid, root=root, uid=uid, gid=uid)
    except OSError:
        os.kill(pid, 9)
    finally:
        os.write(ready_write, b"x")
        os.close(ready_write)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def _write_id_maps(pid: int, *, root: bool, uid: int, gid: int) -> None:
    """Map a child's new user namespace (called from its parent, right after clone).

    As root, the child's setup runs as root inside (uid 0 maps to 0, for reading the host
    paths it binds) and customer code as INNER_ID, which maps to the sandbox user.
    Otherwise uid 0 inside maps to the user running Splice, the only uid it may map.
    """
    if root:
        uid_map = f"0 0 1\n{INNER_ID} {uid} 1\n"
        gid_map = f"0 0 1\n{INNER_ID} {gid} 1\n"
        linux.write_id_maps(pid, uid_map, gid_map, deny_setgroups=False)
    else:
        uid_map, gid_map = f"0 {os.geteuid()} 1\n", f"0 {os.getegid()} 1\n"
        linux.write_id_maps(pid, uid_map, gid_map, deny_setgroups=True)


def _readable_paths(extra: Iterable[str], *, hidden: Path) -> list[str]:
    """Host paths a child may read: system libraries, the Python installation, Splice.

    A path that contains ``hidden`` (the scratch root, inside the data directory) is left
    out, so that a broad entry of sys.path cannot expose the platform's files.
    """
    import splice

    candidates = [*SYSTEM_PATHS, *ETC_FILES, sys.base_prefix, sys.prefix]
    candidates += [entry for entry in sys.path if entry and os.path.isdir(entry)]
    candidates += list(splice.__path__)
    candidates += list(extra)
    paths: list[str] = []
    for candidate in candidates:
        if os.path.lexists(candidate):
            path = os.path.abspath(candidate)
            exposes = str(hidden.resolve()).startswith(path.rstrip(os.sep) + os.sep)
            if path not in paths and not exposes:
                paths.append(path)
    # A path inside another one is bound with it; keep only the outermost.
    paths.sort()
    outermost: list[str] = []
    for path in paths:
        if not any(path.startswith(kept + os.sep) for kept in outermost):
            outermost.append(path)
    return outermost


def _prepare_cgroups() -> dict[str, str]:
    """Create this template's cgroup under each usable controller (v2 first, then v1)."""
    found: dict[str, str] = {}
    for controller in ("pids", "memory"):
        base = _controller_path(controller)
        if base is None:
            continue
        _remove_stale_cgroups(Path(base))
        group = Path(base) / f"splice-{os.getpid()}"
        try:
            group.mkdir(exist_ok=True)
        except OSError:
            continue
        found[controller] = str(group)
    return found


def _remove_stale_cgroups(base: Path) -> None:
    """Remove the empty cgroups of templates that died without cleaning up after them."""
    for group in base.glob("splice-*"):
        owner = group.name.removeprefix("splice-")
        if not owner.isdigit() or os.path.exists(f"/proc/{owner}"):
            continue
        executions = [entry for entry in group.iterdir() if entry.name.startswith("exec-")]
        remove_cgroups({entry.name: str(entry) for entry in executions})
        remove_cgroups({"template": str(group)})


def _controller_path(controller: str) -> str | None:
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            candidate = f"/sys/fs/cgroup/{controller}{path}"
            if os.path.isdir(candidate) and os.access(candidate, os.W_OK):
                return candidate
    for line in lines:  # cgroup v2: the controller must be enabled for our subtree
        hierarchy, _, path = line.split(":", 2)
        if hierarchy != "0":
            continue
        for mount in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
            group = f"{mount}{path}"
            try:
                enabled = Path(group, "cgroup.subtree_control").read_text().split()
            except OSError:
                continue
            if controller in enabled and os.access(group, os.W_OK):
                return group
    return None


# -- cgroups per execution (in the template, around each fork) -----------------------------


def create_execution_cgroups(plan: Plan, name: str) -> dict[str, str]:
    groups: dict[str, str] = {}
    for controller, parent in plan.cgroups.items():
        group = os.path.join(parent, name)
        try:
            os.mkdir(group)
            if controller == "pids":
                _write(group, "pids.max", str(plan.limits.processes))
            elif plan.limits.memory_bytes is not None:
                limit = str(plan.limits.memory_bytes)
                if os.path.exists(os.path.join(group, "memory.max")):
                    _write(group, "memory.max", limit)
                    _write(group, "memory.swap.max", "0", optional=True)
                else:
                    _write(group, "memory.limit_in_bytes", limit)
                    _write(group, "memory.memsw.limit_in_bytes", limit, optional=True)
        except OSError as error:
            logger.warning("could not prepare cgroup %s: %s", group, error)
            continue
        groups[controller] = group
    return groups


def join_cgroups(groups: dict[str, str], pid: int) -> None:
    for group in groups.values():
        _write(group, "cgroup.procs", str(pid))


def memory_limit_hit(groups: dict[str, str]) -> bool:
    """Tell whether the execution's memory cgroup killed a process or refused memory."""
    group = groups.get("memory")
    if group is None:
        return False
    for name, key in (("memory.events", "oom_kill"), ("memory.oom_control", "oom_kill")):
        try:
            for line in Path(group, name).read_text().splitlines():
                label, _, value = line.partition(" ")
                if label == key and int(value) > 0:
                    return True
        except (OSError, ValueError):
            continue
    try:
        return int(Path(group, "memory.failcnt").read_text()) > 0
    except (OSError, ValueError):
        return False


def remove_cgroups(groups: dict[str, str]) -> None:
    for group in groups.values():
        try:
            os.rmdir(group)
        except OSError as error:
            if error.errno != errno.ENOENT:
                logger.warning("could not remove cgroup %s: %s", group, error)


def _write(group: str, name: str, value: str, *, optional: bool = False) -> None:
    try:
        with open(os.path.join(group, name), "w") as file:
            file.write(value)
    except OSError:
        if not optional:
            raise


# -- confinement (in the child) ------------------------------------------------------------


@dataclass
class Stage:
    """The state :func:`prepare` leaves before the request: the root to pivot into, rules."""

    root: str | None = None  # the assembled root, before the pivot
    ruleset: int | None = None  # a Landlock ruleset with the rules of the shared paths


def prepare(plan: Plan) -> Stage:
    """Do the part of confinement that no execution's details change.

    A spare child runs this while it waits for its execution, so that only binding the
    scratch folder and grants, the pivot and the drop of privileges remain on the
    execution's path.
    """
    stage = Stage()
    try:
        _set_rlimits(plan)
        if plan.available["private-root"]:
            linux.unshare(linux.CLONE_NEWNS | linux.CLONE_NEWIPC | linux.CLONE_NEWUTS)
            stage.root = _build_shared_root(plan)
        if plan.available["landlock"]:
            stage.ruleset = linux.landlock_ruleset(plan.landlock_abi)
            prefix = stage.root or ""
            for path, access in _shared_landlock_rules(plan):
                linux.landlock_allow(stage.ruleset, prefix + path, access, plan.landlock_abi)
    except OSError as error:
        raise ConfinementError(f"{error.strerror} ({error.filename or ''})") from error
    return stage


def enter(
    plan: Plan,
    stage: Stage,
    *,
    scratch_dir: str,
    grants: Iterable[tuple[str, bool]],
    hostname: str = "splice",
) -> None:
    """Finish confinement for one execution; raise ConfinementError when a step fails."""
    grants = list(grants)
    try:
        if stage.root is not None:
            if plan.root:  # hand the scratch folder to the user that customer code runs as
                owner = INNER_ID if plan.available["user-namespace"] else plan.sandbox_uid
                os.chown(scratch_dir, owner, owner)
            _bind(scratch_dir, stage.root + scratch_dir, writable=True)
            for path, writable in grants:
                _bind(path, stage.root + path, writable=writable)
            _pivot(stage.root)
            linux.sethostname(hostname)
        os.chdir(scratch_dir)
        _drop_privileges(plan)
        if plan.available["no-new-privileges"]:
            linux.set_no_new_privs()
        if stage.ruleset is not None:
            full = linux.landlock_handled_access(plan.landlock_abi)
            linux.landlock_allow(stage.ruleset, scratch_dir, full, plan.landlock_abi)
            for path, writable in grants:
                access = full if writable else linux.READ_ACCESS
                linux.landlock_allow(stage.ruleset, path, access, plan.landlock_abi)
            linux.landlock_enforce(stage.ruleset)
        if plan.available["seccomp"]:
            linux.load_seccomp_program(plan.seccomp_program)
    except OSError as error:
        raise ConfinementError(f"{error.strerror} ({error.filename or ''})") from error


def _drop_privileges(plan: Plan) -> None:
    """Switch to the sandbox user, or at least give up every capability."""
    if plan.root and plan.available["unprivileged-user"]:
        inside = INNER_ID if plan.available["user-namespace"] else plan.sandbox_uid
        os.setgroups([])
        os.setresgid(inside, inside, inside)
        os.setresuid(inside, inside, inside)  # clears every capability
    elif plan.available["user-namespace"]:
        linux.drop_capabilities()  # uid 0 of its own namespace: nothing else is mapped


def _set_rlimits(plan: Plan) -> None:
    limits = plan.limits
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size, limits.file_size))
    if limits.cpu_seconds is not None:
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
    if limits.memory_bytes is not None and not plan.available["cgroup-memory"]:
        resource.setrlimit(resource.RLIMIT_DATA, (limits.memory_bytes, limits.memory_bytes))
    if not plan.available["cgroup-pids"]:
        # Binds only an unprivileged user, whose other processes count as well.
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))


def _build_shared_root(plan: Plan) -> str:
    """Assemble the read-only root from bind mounts, without the execution's folders."""
    root = plan.root_mount_point
    linux.mount("none", "/", None, linux.MS_REC | linux.MS_PRIVATE)
    linux.mount("tmpfs", root, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "size=1m,mode=0755")
    # A private /tmp first, so that binds below /tmp (a scratch folder there) land inside
    # it. Its files count against the execution's memory and vanish with it.
    os.makedirs(root + "/tmp")
    linux.mount(
        "tmpfs", root + "/tmp", "tmpfs", linux.MS_NOSUID | linux.MS_NODEV,
        f"size={plan.limits.file_size},mode=1777",
    )  # fmt: skip
    for path in plan.readable_paths:
        _bind(path, root + path, writable=False)
    _make_dev(root)
    os.makedirs(root + "/proc", exist_ok=True)
    linux.mount("proc", root + "/proc", "proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
    return root


def _pivot(root: str) -> None:
    """Make ``root`` the file system root, detach the host's, and make the root read-only."""
    os.makedirs(root + "/.old")
    linux.pivot_root(root, root + "/.old")
    os.chdir("/")
    linux.umount("/.old", linux.MNT_DETACH)
    os.rmdir("/.old")
    linux.mount(
        "none", "/", None,
        linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV,
    )  # fmt: skip


def _bind(source: str, target: str, *, writable: bool) -> None:
    if os.path.islink(source):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.symlink(os.readlink(source), target)
        return
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w"):
            pass
    linux.mount(source, target, None, linux.MS_BIND | linux.MS_REC)
    # In a user namespace the source mount's own restrictions are locked: keep them.
    locked = os.statvfs(source).f_flag & (os.ST_RDONLY | os.ST_NOSUID | os.ST_NODEV | os.ST_NOEXEC)
    flags = linux.MS_REMOUNT | linux.MS_BIND | linux.MS_NOSUID | linux.MS_NODEV | locked
    if not writable:
        flags |= linux.MS_RDONLY
    linux.mount("none", target, None, flags)


def _make_dev(root: str) -> None:
    dev = root + "/dev"
    os.makedirs(dev)
    linux.mount("tmpfs", dev, "tmpfs", linux.MS_NOSUID | linux.MS_NOEXEC, "size=64k,mode=0755")
    for name in DEVICES:
        target = f"{dev}/{name}"
        with open(target, "w"):
            pass
        linux.mount(f"/dev/{name}", target, None, linux.MS_BIND)
    os.symlink("/proc/self/fd", f"{dev}/fd")
    for number, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{number}", f"{dev}/{name}")


def _shared_landlock_rules(plan: Plan) -> list[tuple[str, int]]:
    """Landlock rules for the paths every execution has (as seen from inside the root)."""
    full = linux.landlock_handled_access(plan.landlock_abi)
    device = linux.ACCESS_FS_READ_FILE | linux.ACCESS_FS_WRITE_FILE
    rules = [(path, linux.READ_ACCESS) for path in plan.readable_paths]
    rules += [("/proc", linux.READ_ACCESS)]
    if plan.available["private-root"]:
        rules.append(("/tmp", full))  # the child's private tmpfs, not the host's /tmp
    rules += [(f"/dev/{name}", device) for name in DEVICES]
    return rules
