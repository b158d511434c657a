"""Run untrusted generated programs (MBPP / HumanEval completions) in separate, limited processes.

What is isolated. Each program runs as ``python -I -S`` (``sys.executable``; isolated mode; the sys.path that
site would build is set without running .pth hooks, which cost ~45 ms per start here) in a fresh temporary
directory that is its cwd, HOME and TMPDIR, with a minimal environment (no proxies, tokens or PYTHON*
variables), stdin on /dev/null, stdout discarded and only the tail of stderr kept. A small bootstrap applies,
before the program's first line:

- its own session and process group (``setsid``): on timeout the whole group gets SIGKILL;
- rlimits: RLIMIT_AS (``memory_mb``), RLIMIT_CPU, RLIMIT_FSIZE (64 MB), RLIMIT_NPROC, RLIMIT_CORE 0,
  RLIMIT_NOFILE; niceness +5; ``no_new_privs`` (setuid binaries such as su or sudo gain nothing);
- network: a new, empty network namespace (no interface up, not even loopback) and a new IPC namespace, where
  the kernel allows it (root, or unprivileged user namespaces for a non-root caller). Otherwise an audit hook
  (``sys.addaudithook``; Python code cannot remove it) refuses non-AF_UNIX sockets, name lookups, starting
  other programs (they would not carry the hook) and ctypes calls: a guard against accidents, not a boundary;
- memory per run: where a memory cgroup can be made below the harness's own (cgroup v1 `memory`, or v2 with
  the controller delegated), the run's processes and the files of its tmpfs share one limit, ``memory_mb``
  (swap included); an OOM kill is reported as "out of memory". RLIMIT_AS still bounds each process;
- CPU per run: where a `cpu` cgroup can be made likewise, all of the run's processes share one scheduler weight,
  so a program that keeps 64 processes busy slows a sibling run as much as one busy process would;
- as root: the program runs as a dedicated unprivileged uid/gid, ``UID_BASE + slot`` (not in /etc/passwd, no
  supplementary groups). That is what makes RLIMIT_NPROC hold (the kernel does not apply it to root). Each
  concurrent run holds its own slot (an flock, so also across harness processes), so after every run all
  processes of that uid are killed -- including descendants that left the process group with setsid -- and
  nothing of a sibling run is touched;
- as root, files: a private mount namespace in which every mount is read-only (``mount_setattr``, recursive)
  except one fresh tmpfs of ``disk_mb`` (default 256 MB, 65,536 files) that is /tmp -- holding the run's
  folder -- and also /var/tmp and /dev/shm. So the program can modify nothing outside, what it writes is bounded
  as a whole (and counts against its memory), and it vanishes with the run's last process. The host's /tmp is
  hidden. If the Python installation lies below a directory that uid cannot enter (pyenv in /root), that
  directory becomes an empty tmpfs holding only bind mounts of the Python directories.

What is not isolated. Files are not hidden beyond /tmp: the program can read whatever is world-readable, and
see the process table. There is no seccomp filter. Linux only (/proc, namespaces, pidfd). Where the kernel
refuses a mount namespace (root without CAP_SYS_ADMIN), the uid drop still protects files outside, but the
program may write to world-writable places (what it leaves at the top of /tmp, /var/tmp and /dev/shm is
removed; elsewhere it stays) and only RLIMIT_FSIZE bounds its files, each. Without a memory cgroup, memory is
limited per process: up to RLIMIT_NPROC processes, each with its own RLIMIT_AS.

As a non-root caller there is no uid drop, no private file system and usually no cgroup: the program runs as
the caller's user, so files outside its directory are protected only by normal file permissions (it may write
wherever the caller may, and what it leaves stays), it can signal the caller's other processes, RLIMIT_NPROC
counts all of that user's processes (it is set to their current number plus the budget), a descendant that
calls setsid escapes the group kill, and memory and disk are bounded per process and per file only.
``isolation()`` reports what applies on this machine.
"""
from __future__ import annotations

import fcntl
import itertools
import json
import math
import os
import secrets
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

__all__ = ["Outcome", "run_program", "run_programs", "isolation"]

STDERR_CHARS = 2_000     # Outcome.detail keeps at most this much of the end of stderr
FILE_MB = 64             # RLIMIT_FSIZE: a runaway write cannot fill the disk
NPROC = 64               # processes (threads count too) a program may have at once
NOFILE = 256
DISK_MB = 256            # root: the run's private tmpfs (its folder, /tmp, /var/tmp, /dev/shm together)
INODES = 65_536          # files and folders in that tmpfs
# Dedicated uids for root runs: far above login users and the usual subordinate-id ranges, below 2**31.
UID_BASE = int(os.environ.get("GLM_EVAL_SANDBOX_UID_BASE", 1_900_000_000))
UID_SLOTS = 512          # concurrent root runs per machine, all harness processes together
SHARED_TMP = ("/tmp", "/var/tmp", "/dev/shm")   # world-writable places a dropped uid can still write to

_FORCE_AUDIT = False     # tests set this to exercise the audit-hook fallback on machines where netns works


@dataclass(frozen=True)
class Outcome:
    status: str          # "passed" | "failed" (non-zero exit, assertion) | "timeout" | "error" (sandbox could not run)
    detail: str = ""     # last lines of stderr (at most STDERR_CHARS), or why it timed out / could not run
    seconds: float = 0.0


def run_program(source: str, timeout: float = 10.0, memory_mb: int = 1024, cpu_seconds: int | None = None,
                disk_mb: int = DISK_MB) -> Outcome:
    """Run one program in the sandbox and wait for it (at most `timeout` seconds, wall clock).

    `cpu_seconds` defaults to ceil(timeout) + 1 per process, so for a single-threaded program the wall clock
    decides. "passed" means the program ran to its last line and exited with status 0: one that leaves early
    (``sys.exit(0)``, ``os._exit(0)``, ``exit()``) before its tests ran fails, as in OpenAI's human-eval. Never
    raises for a bad program; "error" only when the sandbox itself cannot run it.
    """
    return _run(source, timeout, memory_mb, cpu_seconds, disk_mb=disk_mb)[0]


def run_programs(sources: list[str], timeout: float = 10.0, memory_mb: int = 1024, workers: int | None = None,
                 on_done: Callable[[int, Outcome], None] | None = None, disk_mb: int = DISK_MB) -> list[Outcome]:
    """Run programs in parallel (default: one at a time per usable CPU); outcomes in the order of `sources`.

    `on_done(index, outcome)` is called in the calling thread as each program finishes (progress, records).
    If it raises, or the caller is interrupted, running programs are killed and queued ones never start.
    """
    workers = max(1, min(workers or len(os.sched_getaffinity(0)), len(sources) or 1))
    results: list[Outcome | None] = [None] * len(sources)
    finished: list[tuple[int, Outcome]] = []
    cond = threading.Condition()
    abort = threading.Event()

    def work(i: int) -> None:
        try:
            outcome = Outcome("error", "aborted") if abort.is_set() else _run(sources[i], timeout, memory_mb,
                                                                                None, abort, disk_mb)[0]
        except BaseException as e:  # a bug in the sandbox: report it rather than hang the caller
            outcome = Outcome("error", f"sandbox: {type(e).__name__}: {e}")
        with cond:
            finished.append((i, outcome))
            cond.notify()

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox")
    try:
        for i in range(len(sources)):
            pool.submit(work, i)
        for _ in range(len(sources)):
            with cond:
                while not finished:
                    cond.wait()
                i, outcome = finished.pop()
            results[i] = outcome
            if on_done is not None:
                on_done(i, outcome)
    except BaseException:
        abort.set()          # why: Ctrl-C must not leave up to `timeout` seconds of programs running
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results  # type: ignore[return-value]


_isolation: dict | None = None
_isolation_lock = threading.Lock()


def isolation() -> dict:
    """What isolation applies here, probed once by running an empty program through the sandbox.

    Keys: ``ok`` (the probe ran; else ``error``), ``root``, ``uid_drop``, ``uid_range`` ((first, last) or None),
    ``network`` ("netns" | "audit"), ``ipc_namespace``, ``nproc_per_run`` (RLIMIT_NPROC holds, per run),
    ``kill`` (how a run's processes are ended), ``files`` (what protects files outside the run's directory),
    ``filesystem`` ("private tmpfs, rest read-only" | "private tmpfs" | "shared"), ``memory_per_run`` and
    ``memory`` (one memory cgroup per run, or RLIMIT_AS per process), ``cpu_per_run`` and ``cpu`` (one CPU share
    per run, or per process), ``disk`` (what bounds what it writes).
    """
    global _isolation
    with _isolation_lock:
        if _isolation is None:
            outcome, report = _run("pass", 30.0, 256, None)
            root = os.geteuid() == 0
            per_run = frozenset().union(*(controllers for _, _, controllers in _cgroup_bases()))
            _isolation = {
                "ok": outcome.status == "passed", "error": "" if outcome.status == "passed" else outcome.detail,
                "root": root, "uid_drop": root and report.get("uid") not in (None, 0),
                "uid_range": (UID_BASE, UID_BASE + UID_SLOTS - 1) if root else None,
                "network": report.get("network", "audit"), "ipc_namespace": bool(report.get("ipc")),
                "nproc_per_run": root,
                "kill": ("process group, then every process of the run's uid" if root
                         else "process group (a descendant that calls setsid escapes)"),
                "files": _files_report(root, report.get("filesystem", "shared")),
                "memory_per_run": "memory" in per_run,
                "memory": ("one cgroup per run: its processes and its tmpfs files together" if "memory" in per_run
                           else "per process (RLIMIT_AS): several processes may each use memory_mb"),
                "cpu_per_run": "cpu" in per_run,
                "cpu": ("one share per run (cgroup), however many processes it has" if "cpu" in per_run
                        else "one share per process (niceness +5): a run with many busy processes takes more"),
                "disk": (f"private tmpfs of disk_mb (default {DISK_MB} MB) for its folder, /tmp, /var/tmp, /dev/shm"
                         if report.get("filesystem", "shared") != "shared"
                         else f"per file (RLIMIT_FSIZE {FILE_MB} MB)"),
                "filesystem": report.get("filesystem", "shared"),
            }
        return dict(_isolation)


def _files_report(root: bool, filesystem: str) -> str:
    if filesystem == "private tmpfs, rest read-only":
        return "writes only to its private tmpfs; every other mount read-only, host /tmp hidden"
    if root:
        return "dedicated uid: writes only to its directory and world-writable places (what it leaves is removed)"
    return "caller's uid: normal file permissions only"


# --- inside the child ------------------------------------------------------------------------------------------

# Runs in the child before the program, as root (or the caller). It reports over fd `ready` so that the parent
# can tell "the sandbox failed" from "the program failed"; the fd is closed before the program starts, so the
# program cannot forge that report. Everything here costs every run: keep it small.
_BOOTSTRAP = r'''
import json, os, resource, sys
cfg = json.loads(sys.argv[1])
ready, done, nonce = cfg["ready"], cfg["done"], cfg["nonce"]
try:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    nproc = cfg["nproc"]
    if cfg["uid"] is None:  # not root: RLIMIT_NPROC counts all of this user's processes; allow those + budget
        me = str(os.getuid()).encode()
        for p in os.listdir("/proc"):
            try:
                with open("/proc/" + p + "/status", "rb") as f:
                    status = f.read()
            except OSError:
                continue
            i = status.find(b"\nUid:")
            nproc += i >= 0 and status[i + 5:].split()[0] == me
    for cgroup in cfg["cgroups"]:  # all of the run's processes (and its tmpfs) share one memory limit, one CPU share
        with open(cgroup + "/cgroup.procs", "w") as f:
            f.write(str(os.getpid()))
    namespace = False
    if cfg["private"] or cfg["reveal"]:  # root: a mount namespace of its own, propagation private
        namespace = libc.unshare(0x00020000) == 0 and libc.mount(b"none", b"/", None, 0x4000 | 0x40000, None) == 0
        if cfg["reveal"] and not namespace:
            raise OSError(ctypes.get_errno(), "private mount namespace")

    def cover(target, keep, source, fstype, flags, options):
        """Mount `source` over `target`, then bind the directories `keep` (below target) back in place."""
        fds = [os.open(p, os.O_PATH | os.O_DIRECTORY) for p in keep]
        if libc.mount(source, target.encode(), fstype, flags, options) != 0:
            raise OSError(ctypes.get_errno(), "mount over " + target)
        for p, fd in zip(keep, fds):
            os.makedirs(p, exist_ok=True)
            if libc.mount(f"/proc/self/fd/{fd}".encode(), p.encode(), None, 0x1000 | 0x4000, None) != 0:
                raise OSError(ctypes.get_errno(), "bind mount of " + p)
            os.close(fd)

    # The Python installation may sit below a directory the sandbox uid cannot enter (e.g. pyenv in /root): that
    # directory becomes an empty tmpfs holding only bind mounts of the Python directories (the rest stays hidden).
    for hidden, paths in cfg["reveal"].items():
        cover(hidden, paths, b"tmpfs", b"tmpfs", 2 | 4, b"mode=0755,size=1m")
    filesystem = "shared"
    if cfg["private"] and namespace:
        # Only the run's own tmpfs is writable: every other mount turns read-only (mount_setattr, recursive), and
        # /tmp, /var/tmp and /dev/shm become one fresh tmpfs of at most `disk_mb`, so what the program writes is
        # bounded as a whole, charged to its memory cgroup, and gone with its last process.
        attr = (ctypes.c_uint64 * 4)(1, 0, 0, 0)             # MOUNT_ATTR_RDONLY
        readonly = libc.syscall(ctypes.c_long(442), ctypes.c_int(-100), b"/", ctypes.c_uint(0x8000), attr,
                                ctypes.c_size_t(32)) == 0    # mount_setattr(AT_FDCWD, "/", AT_RECURSIVE, ...)
        workdir, program, private = os.getcwd(), sys.argv[2], cfg["private"]
        with open(program, "rb") as f:
            source = f.read()
        cover("/tmp", private["keep"].get("/tmp", []), b"tmpfs", b"tmpfs", 2 | 4,
              f"mode=1777,size={private['disk_mb']}m,nr_inodes={private['inodes']}".encode())
        for place in ("/var/tmp", "/dev/shm"):
            if os.path.isdir(place):
                inside = "/tmp/.glm_eval" + place.replace("/", "_")
                os.mkdir(inside)
                os.chmod(inside, 0o1777)
                cover(place, private["keep"].get(place, []), inside.encode(), None, 0x1000, None)   # MS_BIND
        os.mkdir(workdir, 0o700)
        with open(program, "wb") as f:
            f.write(source)
        os.chown(workdir, cfg["uid"], cfg["uid"])
        os.chown(program, cfg["uid"], cfg["uid"])
        os.chdir(workdir)                    # the old cwd is the host's folder, now hidden
        filesystem = "private tmpfs, rest read-only" if readonly else "private tmpfs"
    network, ipc = "audit", False
    if cfg["netns"]:
        # CLONE_NEWNET | CLONE_NEWIPC need CAP_SYS_ADMIN; a non-root caller may get them in a new user namespace.
        flags = 0x40000000 | 0x08000000 | (0 if os.geteuid() == 0 else 0x10000000)
        if libc.unshare(flags) == 0:
            network, ipc = "netns", True
        elif libc.unshare(flags & ~0x08000000) == 0:
            network = "netns"
    cfg["limits"]["RLIMIT_NPROC"] = (nproc, nproc)
    for name, (soft, hard) in cfg["limits"].items():
        limit = getattr(resource, name)
        ceiling = resource.getrlimit(limit)[1]   # a non-root caller cannot raise its own hard limits
        if ceiling != resource.RLIM_INFINITY:
            soft, hard = min(soft, ceiling), min(hard, ceiling)
        resource.setrlimit(limit, (soft, hard))
    os.nice(5)                       # the harness and the machine stay responsive under a fork bomb
    os.umask(0o077)
    if cfg["uid"] is not None:
        os.setgroups([])
        os.setresgid(cfg["uid"], cfg["uid"], cfg["uid"])
        os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])
    libc.prctl(38, 1, 0, 0, 0)       # PR_SET_NO_NEW_PRIVS
    libc.prctl(1, 9, 0, 0, 0)        # PR_SET_PDEATHSIG SIGKILL (after setuid, which clears it): dies with the harness
    if os.getppid() != cfg["ppid"]:
        os._exit(125)
    del libc, ctypes
    if network != "netns":
        def _guard(event, args,
                   _blocked=frozenset(("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
                                       "socket.getnameinfo", "socket.sethostname", "subprocess.Popen", "os.system",
                                       "os.exec", "os.posix_spawn", "os.spawn", "os.startfile", "ctypes.dlopen",
                                       "ctypes.dlsym", "ctypes.dlsym/handle", "ctypes.call_function",
                                       "ctypes.cdata", "ctypes.cdata/buffer")),
                   _address=frozenset(("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg"))):
            if (event in _blocked
                    or (event == "socket.__new__" and args[1] != 1)            # AF_UNIX only
                    or (event in _address and not isinstance(args[1], (str, bytes)))
                    or (event == "import" and args[0] == "_posixsubprocess")):  # fork_exec has no audit event
                raise PermissionError(f"sandbox: {event} is not allowed (no network, no other programs)")
        sys.addaudithook(_guard)
    os.write(ready, json.dumps({"ok": True, "network": network, "ipc": ipc, "uid": os.getuid(),
                               "filesystem": filesystem}).encode())
    os.close(ready)
except BaseException as e:
    try:
        os.write(ready, json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}).encode())
    finally:
        os._exit(125)
import site, types
sys.path[:] = cfg["path"]
site.setquit()                       # exit() / quit() / help(), as with site enabled
site.sethelper()
site.setcopyright()
path = sys.argv[2]
sys.argv = [path]
main = types.ModuleType("__main__")
main.__file__ = path
main.__builtins__ = __builtins__
sys.modules["__main__"] = main
del cfg, ready, json, resource, site, types
with open(path, "rb") as f:
    code = compile(f.read(), path, "exec")
exec(code, main.__dict__)
os.write(done, nonce.encode())  # the last line ran: only now can the parent count an exit status 0 as a pass
'''

# Run as the sandbox uid: kill(-1) signals every process that uid may signal -- exactly that uid's processes --
# in one pass in the kernel, so a forking program cannot outrun it and no pid can be reused between look and kill.
# Started as root and dropping to the uid itself: the uid may not be allowed to execute sys.executable.
_KILL_ALL = ("import os, sys\nu = int(sys.argv[1])\nos.setgroups([])\nos.setresgid(u, u, u)\nos.setresuid(u, u, u)\n"
             "try:\n    os.kill(-1, 9)\nexcept ProcessLookupError:\n    pass\n")


# --- the run ---------------------------------------------------------------------------------------------------

def _run(source: str, timeout: float, memory_mb: int, cpu_seconds: int | None,
         abort: threading.Event | None = None, disk_mb: int = DISK_MB) -> tuple[Outcome, dict]:
    start = time.monotonic()
    uid = lock_fd = workdir = proc = ready_r = done_r = None
    cgroups: list[str] = []
    report: dict = {}
    try:
        if os.geteuid() == 0:
            uid, lock_fd = _acquire_uid()
            _kill_uid(uid)                       # leftovers of a harness that died mid-run
            _remove_owned(uid)
        workdir = _make_workdir(uid)
        program = os.path.join(workdir, "program.py")
        with open(program, "wb") as f:
            f.write(source.encode("utf-8", "surrogatepass"))
        if uid is not None:
            os.chown(program, uid, uid)
        cpu = max(1, int(cpu_seconds if cpu_seconds is not None else math.ceil(timeout) + 1))
        memory = max(1, int(memory_mb)) * 2**20
        ready_r, ready_w = os.pipe()
        done_r, done_w = os.pipe()  # the bootstrap writes `nonce` here after the program's last line
        nonce = secrets.token_hex(16)
        path, hidden, under_tmp = _python_layout()
        cgroups = _make_cgroups(memory)
        cfg = {"ready": ready_w, "done": done_w, "nonce": nonce, "uid": uid, "ppid": os.getpid(), "nproc": NPROC,
               "netns": not _FORCE_AUDIT, "path": path, "reveal": hidden if uid is not None else {},
               "cgroups": cgroups,
               "private": {"disk_mb": max(1, int(disk_mb)), "inodes": INODES, "keep": under_tmp}
               if uid is not None else None,
               # soft < hard CPU limit: SIGXCPU first (reported as a timeout), SIGKILL a second later
               "limits": {"RLIMIT_AS": (memory, memory), "RLIMIT_CPU": (cpu, cpu + 1),
                          "RLIMIT_FSIZE": (FILE_MB * 2**20,) * 2, "RLIMIT_CORE": (0, 0),
                          "RLIMIT_NOFILE": (NOFILE, NOFILE)}}
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir,
               "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        try:
            # -S: .pth import hooks of the harness's environment cost ~45 ms here and are not the program's
            # business; the bootstrap sets the sys.path that site would have built.
            proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _BOOTSTRAP, json.dumps(cfg), program],
                                    cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, pass_fds=(ready_w, done_w), start_new_session=True)
        finally:
            os.close(ready_w)
            os.close(done_w)
        timed_out, tail = _wait(proc, start + timeout, abort)
        seconds = time.monotonic() - start
        _kill(proc.pid, uid)                     # before reaping, so that the group id cannot be reused meanwhile
        tail += _drain(proc.stderr.fileno())
        proc.wait()
        report = _read_report(ready_r)
        os.set_blocking(done_r, False)
        completed = (_read(done_r) or b"") == nonce.encode()
        outcome = _outcome(proc.returncode, timed_out, timeout, cpu, report, _tail_text(tail), seconds,
                           abort is not None and abort.is_set(), completed)
        if outcome.status == "failed" and _ran_out_of_memory(cgroups):
            outcome = Outcome("failed", f"out of memory: the program's processes and files together exceeded "
                                        f"{memory_mb} MB\n{outcome.detail}".rstrip(), seconds)
        return outcome, report
    except Exception as e:  # the sandbox itself failed: no free uid slot, no temporary directory, cannot spawn
        return Outcome("error", f"sandbox: {type(e).__name__}: {e}", time.monotonic() - start), report
    finally:
        # Also on KeyboardInterrupt or an error above: nothing of the program may outlive the call.
        if proc is not None:
            if proc.returncode is None:
                _kill(proc.pid, uid, check=False)
                proc.wait()
            proc.stderr.close()
        for fd in (ready_r, done_r):
            if fd is not None:
                os.close(fd)
        if uid is not None:
            _remove_owned(uid)
        if workdir is not None:
            _remove_tree(workdir)
        for cgroup in cgroups:
            _remove_cgroup(cgroup)
        if lock_fd is not None:
            os.close(lock_fd)                    # releases the uid slot


def _outcome(rc: int, timed_out: bool, timeout: float, cpu: int, report: dict, text: str, seconds: float,
             aborted: bool, completed: bool) -> Outcome:
    def with_text(why: str) -> str:
        return f"{why}\n{text}" if text else why

    if not report.get("ok"):
        if "error" in report:
            return Outcome("error", with_text(f"sandbox setup failed: {report['error']}"), seconds)
        if timed_out:
            return Outcome("timeout", with_text(f"timed out after {timeout:g} s before the program started"), seconds)
        return Outcome("error", with_text(f"sandbox bootstrap ended with status {rc} before the program"), seconds)
    if aborted:
        return Outcome("error", with_text("aborted"), seconds)
    if timed_out:
        return Outcome("timeout", with_text(f"timed out after {timeout:g} s (wall clock); process group killed"),
                       seconds)
    if rc == 0 and completed:
        return Outcome("passed", text, seconds)
    if rc == 0:
        return Outcome("failed", with_text("exited with status 0 before its last line ran (sys.exit, os._exit): "
                                           "its tests did not run to the end"), seconds)
    if rc == -signal.SIGXCPU:
        return Outcome("timeout", with_text(f"CPU time limit of {cpu} s exceeded"), seconds)
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        return Outcome("failed", with_text(f"killed by {name}"), seconds)
    return Outcome("failed", text or f"exit status {rc}", seconds)


def _wait(proc: subprocess.Popen, deadline: float, abort: threading.Event | None) -> tuple[bool, bytearray]:
    """Keep the tail of stderr until the program exits (or the deadline). Returns (timed out, tail); no reaping."""
    tail = bytearray()
    err = proc.stderr.fileno()
    os.set_blocking(err, False)
    sel = selectors.DefaultSelector()
    sel.register(err, selectors.EVENT_READ)
    try:
        pidfd = os.pidfd_open(proc.pid)          # readable once the process exits: wake up without polling
        sel.register(pidfd, selectors.EVENT_READ)
    except (AttributeError, OSError):
        pidfd = None
    try:
        while not _exited(proc.pid):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True, tail
            if abort is not None and abort.is_set():
                return False, tail
            wait = remaining if pidfd is not None else min(remaining, 0.01)
            for key, _ in sel.select(min(wait, 0.25) if abort is not None else wait):
                if key.fd != err:
                    continue
                chunk = _read(err)
                if chunk == b"":                 # every writer closed stderr; the process may still run
                    sel.unregister(err)
                elif chunk:
                    tail += chunk
                    if len(tail) > 8 * STDERR_CHARS:
                        del tail[:-4 * STDERR_CHARS]   # why: a flood of output must not grow the harness
        return False, tail
    finally:
        sel.close()
        if pidfd is not None:
            os.close(pidfd)


def _exited(pid: int) -> bool:
    # WNOWAIT leaves the zombie in place: its pid (the group id) stays reserved until we have killed the group.
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _read(fd: int) -> bytes | None:
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return None


def _drain(fd: int) -> bytes:
    """What is left in the stderr pipe once the processes are dead (bounded: 8 MB at most are read)."""
    out = bytearray()
    for _ in range(128):
        chunk = _read(fd)
        if not chunk:
            break
        out += chunk
        del out[:-4 * STDERR_CHARS]
    return bytes(out)


def _tail_text(tail: bytes) -> str:
    text = bytes(tail).decode("utf-8", "replace").rstrip()
    if len(text) > STDERR_CHARS:
        text = text[-STDERR_CHARS:]
        cut = text.find("\n")
        if 0 <= cut < STDERR_CHARS // 2:
            text = text[cut + 1:]                # start at a line boundary
    return text


def _read_report(fd: int) -> dict:
    os.set_blocking(fd, False)
    try:
        return json.loads(os.read(fd, 65536) or b"{}")
    except (BlockingIOError, ValueError):
        return {}


# --- processes -------------------------------------------------------------------------------------------------

def _kill(pid: int, uid: int | None, check: bool = True) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)           # pgid == pid: the child called setsid
    except (ProcessLookupError, PermissionError):
        pass
    if uid is not None:
        try:
            _kill_uid(uid)
        except Exception:
            if check:
                raise


def _kill_uid(uid: int, patience: float = 10.0) -> None:
    """Kill every process running as `uid` (a run's dedicated uid) and wait until none is left."""
    deadline = time.monotonic() + patience
    last_kill = -1.0
    while pids := _live_pids(uid):
        now = time.monotonic()
        if now > deadline:
            raise RuntimeError(f"processes of sandbox uid {uid} survive SIGKILL: {pids[:10]}")
        if now - last_kill < 0.05:
            time.sleep(0.005)                    # SIGKILLed processes take a moment to exit
            continue
        subprocess.run([sys.executable, "-I", "-S", "-c", _KILL_ALL, str(uid)], env={}, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        last_kill = time.monotonic()


def _live_pids(uid: int) -> list[int]:
    """Processes whose real, effective or saved uid is `uid`, zombies left out (they hold nothing but a pid)."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as f:
                status = f.read()
        except OSError:
            continue
        s = status.find(b"\nState:")
        u = status.find(b"\nUid:")
        if s < 0 or u < 0 or status[s + 7:s + 10].strip()[:1] in (b"Z", b"X"):
            continue
        if str(uid).encode() in status[u + 5:status.find(b"\n", u + 5)].split()[:3]:
            pids.append(int(name))
    return pids


# --- cgroups: memory and CPU per run ---------------------------------------------------------------------------

# Where this process may make a run's cgroups: [(folder, version, controllers its children get)], one entry per
# hierarchy (cgroup v1 mounts `memory` and `cpu` separately; v2 has one tree); [] where none; False: unprobed.
_cgroups: list[tuple[str, str, frozenset[str]]] | bool = False
_cgroup_lock = threading.Lock()
_cgroup_numbers = itertools.count(1)
_CONTROLLERS = ("memory", "cpu")


def _cgroup_bases() -> list[tuple[str, str, frozenset[str]]]:
    """Where a run's cgroups can be made, below this process's own: the v1 `memory` and `cpu` hierarchies, or
    cgroup v2 with the controllers delegated there. Probed once per hierarchy (a child made, limited, removed)."""
    global _cgroups
    with _cgroup_lock:
        if _cgroups is False:
            try:
                with open("/proc/self/cgroup") as f:
                    lines = [line.rstrip("\n").split(":", 2) for line in f]
            except OSError:
                lines = []
            candidates = []
            for _, controllers, path in lines:
                wanted = frozenset(controllers.split(",")) & frozenset(_CONTROLLERS)
                if wanted:   # v1: mounted at /sys/fs/cgroup/<name>, joint mounts as "cpu,cpuacct" with a link "cpu"
                    candidates.append((f"/sys/fs/cgroup/{min(wanted)}{path.rstrip('/')}", "v1", wanted))
            if not candidates:
                v2 = [path for _, controllers, path in lines if controllers == ""]
                if v2:
                    folder, enabled = "/sys/fs/cgroup" + v2[0].rstrip("/"), set()
                    for name in _CONTROLLERS:   # refused (EBUSY) where the folder holds processes itself
                        try:
                            with open(folder + "/cgroup.subtree_control", "w") as f:
                                f.write("+" + name)
                            enabled.add(name)
                        except OSError:
                            pass
                    if enabled:
                        candidates.append((folder, "v2", frozenset(enabled)))
            _cgroups = []
            for base in candidates:
                try:
                    _remove_stale_cgroups(base[0])
                    probe = _make_in(base, 64 << 20)
                    _remove_cgroup(probe)
                    _cgroups.append(base)
                except OSError:
                    pass
        return _cgroups


def _make_cgroups(memory: int) -> list[str]:
    """The run's cgroups: its processes (and its tmpfs pages) share one memory limit of `memory` bytes, swap
    included, and one CPU share. Why the CPU share: the scheduler is fair per process, so a program running its
    64 processes flat out (a fork bomb) would take 64 shares from a sibling run's one; per cgroup it takes one."""
    made: list[str] = []
    try:
        for base in _cgroup_bases():
            made.append(_make_in(base, memory))
    except OSError:
        for path in made:
            _remove_cgroup(path)
        raise
    return made


def _make_in(base: tuple[str, str, frozenset[str]], memory: int) -> str:
    folder, version, controllers = base
    path = f"{folder}/glm_eval_sandbox_{os.getpid()}_{next(_cgroup_numbers)}"
    os.mkdir(path)
    if "memory" in controllers:
        limits = ({"memory.limit_in_bytes": memory, "memory.memsw.limit_in_bytes": memory} if version == "v1"
                  else {"memory.max": memory, "memory.swap.max": 0})
        for name, value in limits.items():
            if name == next(iter(limits)) or os.path.exists(f"{path}/{name}"):   # no swap accounting: no swap file
                with open(f"{path}/{name}", "w") as f:
                    f.write(str(value))
    return path   # cpu: a new group's default weight equals its siblings', which is the point


def _ran_out_of_memory(paths: list[str]) -> bool:
    """Whether the kernel's OOM killer ended a process of the run's cgroups (its limit was reached)."""
    for path in paths:
        for name in ("memory.oom_control", "memory.events"):   # v1, v2: both have an "oom_kill N" line
            try:
                with open(f"{path}/{name}") as f:
                    if any(line.split()[:1] == ["oom_kill"] and int(line.split()[1]) > 0 for line in f):
                        return True
            except OSError:
                continue
    return False


def _remove_cgroup(path: str) -> None:
    for _ in range(50):                          # its killed processes may take a moment to leave
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.01)


def _remove_stale_cgroups(folder: str) -> None:
    """Cgroups of harness processes that died mid-run."""
    for entry in os.listdir(folder):
        if entry.startswith("glm_eval_sandbox_") and not os.path.exists(f"/proc/{entry.split('_')[3]}"):
            _remove_cgroup(f"{folder}/{entry}")


# --- uids and directories --------------------------------------------------------------------------------------

_next_slot = 0
_slot_lock = threading.Lock()


def _acquire_uid() -> tuple[int, int]:
    """A free uid slot, held (flock) until the returned fd is closed -- by this thread, process or any other."""
    global _next_slot
    locks = _lock_dir()
    with _slot_lock:
        first, _next_slot = _next_slot, (_next_slot + 1) % UID_SLOTS
    # Round robin: a slot is reused as late as possible, so its last run's processes are long reaped.
    for k in range(UID_SLOTS):
        slot = (first + k) % UID_SLOTS
        fd = os.open(locks / f"{slot}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        with _slot_lock:
            _next_slot = (slot + 1) % UID_SLOTS
        return UID_BASE + slot, fd
    raise RuntimeError(f"all {UID_SLOTS} sandbox uid slots are busy")


def _lock_dir() -> Path:
    # Owned by us and not writable by others: a sandboxed program (which may write to /tmp) cannot plant or
    # hold lock files there.
    for base in ("/run", tempfile.gettempdir()):
        path = Path(base) / "glm_eval_sandbox"
        try:
            path.mkdir(mode=0o700, exist_ok=True)
            st = path.lstat()
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022:
            return path
    raise RuntimeError("no private directory for sandbox uid slot locks")


_layout: tuple[list[str], dict[str, list[str]], dict[str, list[str]]] | None = None


def _python_layout() -> tuple[list[str], dict[str, list[str]], dict[str, list[str]]]:
    """(sys.path of ``python -I``, {unreachable ancestor: [directories below it the interpreter needs]},
    {/tmp, /var/tmp, /dev/shm: [directories below it the interpreter needs]}: a run's private tmpfs keeps them).

    Asked from the interpreter itself, once per process. The child runs with -S, so it gets this sys.path
    (site-packages and directories added by .pth files) without running .pth import hooks. An ancestor is
    unreachable when others lack search permission on it (the dropped uid has no supplementary groups).
    """
    global _layout
    if _layout is None:
        probe = ("import json, os, sys\nprint(json.dumps([sys.path, [os.path.dirname(sys.executable), sys.prefix, "
                 "sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix]]))")
        path, extra = json.loads(subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True,
                                                text=True, check=True, cwd="/", timeout=60).stdout)
        dirs = sorted({os.path.normpath(p) for p in path + extra if os.path.isabs(p) and os.path.isdir(p)})
        hidden: dict[str, list[str]] = {}
        for d in dirs:
            parts = Path(d).parts
            for i in range(2, len(parts)):       # strict ancestors below "/"
                ancestor = os.path.join(*parts[:i])
                if not os.stat(ancestor).st_mode & stat.S_IXOTH:
                    hidden.setdefault(ancestor, []).append(d)
                    break
        # Nested directories ride along with their parent's bind mount.
        _layout = (path, {a: _outermost(ds) for a, ds in hidden.items()},
                   {place: _outermost([d for d in dirs if d.startswith(place + "/")]) for place in SHARED_TMP})
    return _layout


def _outermost(dirs: list[str]) -> list[str]:
    return [d for d in dirs if not any(d.startswith(e + "/") for e in dirs)]


def _make_workdir(uid: int | None) -> str:
    # As root, under /tmp: the dropped uid must be able to reach its directory by absolute path (HOME, TMPDIR).
    base = "/tmp" if uid is not None and os.path.isdir("/tmp") else None
    path = tempfile.mkdtemp(prefix="glm_sandbox_", dir=base)
    if uid is not None:
        os.chown(path, uid, uid)
    return path


def _remove_owned(uid: int) -> None:
    """Remove what `uid` left at the top of world-writable directories (its processes are all dead by now)."""
    for base in SHARED_TMP:
        try:
            entries = list(os.scandir(base))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    _remove_tree(entry.path)
                else:
                    os.unlink(entry.path)
            except OSError:
                pass


def _remove_tree(path: str) -> None:
    """Remove a folder whatever a program made in it -- a tree thousands of levels deep (shutil.rmtree recurses
    and raises RecursionError), folders it made unreadable, symlink loops -- and never raise: a program must not
    turn its own outcome into a sandbox error, nor break the next program on its uid."""
    try:
        shutil.rmtree(path)
        return
    except (OSError, RecursionError):
        pass
    for command in (["chmod", "-R", "u+rwx", path], ["rm", "-rf", "--one-file-system", path]):  # iterative (fts)
        try:
            subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=600)
        except (OSError, subprocess.SubprocessError):
            pass
