"""The tritonserver process: free loopback ports, start in its own process group, wait for the model, stop.

No process outlives the server object: the server runs in its own process group (same session) with its
Python-backend stubs, `stop()` terminates the whole group (SIGTERM, then SIGKILL after a grace period) and removes
the stubs' shared-memory regions (named `dlrmbench<client pid>x<start>_...`, a prefix unique per start; a start
also removes those whose client process is gone), an `atexit` hook stops servers still running when the
interpreter exits, and the kernel sends the server SIGTERM if this process dies without cleaning up (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import atexit
import ctypes
import itertools
import os
import re
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil

from dlrm_bench.errors import UserError
from dlrm_bench.triton_server.install import TritonInstall, find_triton, make_backend_dir, stub_environment

LOOPBACK = "127.0.0.1"
PORT_ATTEMPTS = 3
"""Server starts tried when an automatically chosen port is taken between the check and the bind."""
GLOG_PREFIX = re.compile(r"^[IWEF]\d{4} [\d:.]+ +\d+ [^\]]+\] ?")
"""Triton's log line prefix: severity, date, time, thread, file:line]."""
PORT_IN_USE_MARKERS = ("already in use", "address in use", "failed to start grpc", "failed to start http")
STUB_NAME = "triton_python_backend_stub"
SHM_NAME = re.compile(r"dlrmbench(\d+)[xo]")
"""/dev/shm names of this project: stub regions (x, server.py) and output regions (o, output_regions.py)."""
_STARTS = itertools.count()

_RUNNING: "set[TritonServer]" = set()


@dataclass
class ServerOptions:
    """How to start the server. Ports: 0 = pick a free one; None (http/metrics) = endpoint off.

    strict_ports: a requested port that is in use is an error naming it (else another port is picked and said).
    """

    grpc_port: int = 0
    http_port: int | None = None
    metrics_port: int | None = None
    host: str = LOOPBACK
    strict_ports: bool = False
    startup_timeout_s: float = 900.0
    stop_timeout_s: float = 15.0
    log_verbose: int = 0
    shm_bytes: int = 16 << 20
    extra_args: list[str] = field(default_factory=list)


def port_is_free(host: str, port: int) -> bool:
    """True when `port` can be bound on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = LOOPBACK, avoid: set[int] | None = None) -> int:
    """A port the kernel says is free on `host` (not one of `avoid`)."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in (avoid or set()):
            return port
    raise UserError(f"no free TCP port found on {host}")


def resolve_port(name: str, requested: int, host: str, strict: bool, taken: set[int]) -> int:
    """`requested` if free; 0 -> a free port; a busy port -> another one (said), or a UserError when strict."""
    if requested == 0:
        return free_port(host, taken)
    if requested not in taken and port_is_free(host, requested):
        return requested
    if strict:
        raise UserError(f"{name} port {requested} on {host} is already in use: stop what holds it or pass "
                        f"another port (0 picks a free one)")
    port = free_port(host, taken)
    print(f"triton: {name} port {requested} on {host} is in use; using {port} instead", flush=True)
    return port


def _child_setup() -> Callable[[], None]:
    """What the server's child process does before exec: its own process group (so the whole server, stubs
    included, can be signalled at once, and a terminal's Ctrl-C reaches only the client, which then stops it),
    and, on Linux, a SIGTERM from the kernel when this process dies without stopping it (PR_SET_PDEATHSIG).

    Same session on purpose: with a new session the server would be its own scheduler autogroup and, on a busy
    machine, get a different CPU share than the engine gets in process (measured: -20% Server capacity with one
    busy neighbour)."""
    prctl = None
    if threading.current_thread() is threading.main_thread():  # the signal follows the creating thread
        try:
            prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            prctl = None
    pr_set_pdeathsig = 1

    def setup() -> None:
        os.setpgid(0, 0)
        if prctl is not None:
            prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)

    return setup


def describe_exit(code: int | None) -> str:
    if code is None:
        return "is still running"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class TritonServer:
    """One tritonserver process serving `repository`, with its log and backend folder under `workdir`."""

    def __init__(self, repository: Path, workdir: Path, options: ServerOptions | None = None,
                 install: TritonInstall | None = None) -> None:
        self.repository = Path(repository).resolve()
        self.workdir = Path(workdir).resolve()
        self.options = options or ServerOptions()
        self.install = install or find_triton()
        self.log_path = self.workdir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.grpc_port: int | None = None
        self.http_port: int | None = None
        self.metrics_port: int | None = None
        self.shm_prefix = ""
        self._lock = threading.Lock()
        self._stopped: subprocess.Popen[bytes] | None = None
        self._log_start = 0

    # ------------------------------------------------------------------ start
    @property
    def grpc_url(self) -> str:
        return f"{self.options.host}:{self.grpc_port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def _pick_ports(self) -> None:
        o, taken = self.options, set()
        self.grpc_port = resolve_port("gRPC", o.grpc_port, o.host, o.strict_ports, taken)
        taken.add(self.grpc_port)
        if o.http_port is not None:
            self.http_port = resolve_port("HTTP", o.http_port, o.host, o.strict_ports, taken)
            taken.add(self.http_port)
        if o.metrics_port is not None:
            self.metrics_port = resolve_port("metrics", o.metrics_port, o.host, o.strict_ports, taken)

    def command(self) -> list[str]:
        o = self.options
        backend_config = [f"python,shm-default-byte-size={o.shm_bytes}", f"python,shm-growth-byte-size={o.shm_bytes}",
                          f"python,shm-region-prefix-name={self.shm_prefix}",
                          f"python,stub-timeout-seconds={int(max(30, o.startup_timeout_s))}"]
        cmd = [str(self.install.binary), f"--model-repository={self.repository}",
               f"--backend-directory={self.workdir / 'backends'}", "--disable-auto-complete-config",
               "--strict-readiness=true", "--exit-on-error=true", f"--exit-timeout-secs={int(o.stop_timeout_s)}",
               f"--log-verbose={o.log_verbose}", f"--grpc-address={o.host}", f"--grpc-port={self.grpc_port}"]
        cmd += [f"--backend-config={c}" for c in backend_config]
        if self.http_port is None:
            cmd.append("--allow-http=false")
        else:
            cmd += [f"--http-address={o.host}", f"--http-port={self.http_port}"]
        if self.metrics_port is None:
            cmd.append("--allow-metrics=false")
        else:
            cmd += [f"--metrics-address={o.host}", f"--metrics-port={self.metrics_port}"]
        return cmd + list(o.extra_args)

    def start(self, model: str) -> "TritonServer":
        """Start the server and wait until `model` is ready; retries with new ports if an automatically picked
        one was taken in the meantime. Raises UserError (with the log tail) if the server or model fails."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        make_backend_dir(self.install, self.workdir / "backends")
        for attempt in range(PORT_ATTEMPTS):
            self._pick_ports()
            self._spawn()
            try:
                self.wait_ready(model)
                return self
            except UserError:
                lost_port = self._lost_port_race()
                self.stop()
                if not lost_port or attempt == PORT_ATTEMPTS - 1:
                    raise
                print(f"triton: port {self.grpc_port} was taken while the server started; retrying", flush=True)
        return self

    def _lost_port_race(self) -> bool:
        auto = self.options.grpc_port == 0 or not self.options.strict_ports
        return auto and any(m in self.log_tail(20).lower() for m in PORT_IN_USE_MARKERS)

    def _spawn(self) -> None:
        remove_stale_shm()
        self.shm_prefix = f"dlrmbench{os.getpid()}x{next(_STARTS)}_"
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, env=stub_environment(),
                                            preexec_fn=_child_setup(), cwd=self.workdir)
        finally:
            log.close()
        _RUNNING.add(self)

    def wait_ready(self, model: str) -> None:
        """Poll readiness over gRPC until `model` is ready, the process exits, or the timeout passes."""
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        deadline = time.monotonic() + self.options.startup_timeout_s
        client = grpcclient.InferenceServerClient(self.grpc_url)
        try:
            while True:
                if not self.alive():
                    cause = self.load_failure(model)
                    if cause:
                        raise UserError(f"model '{model}' failed to load in tritonserver: {cause} "
                                        f"(log {self.log_path})")
                    raise UserError(f"tritonserver {describe_exit(self.returncode())} while loading model "
                                    f"'{model}' (log {self.log_path}): {self.log_summary()}")
                try:
                    if client.is_server_live() and client.is_model_ready(model):
                        return
                except InferenceServerException:
                    pass
                if time.monotonic() > deadline:
                    raise UserError(f"tritonserver did not get model '{model}' ready within "
                                    f"{self.options.startup_timeout_s:.0f} s (set triton_startup_timeout_s; log "
                                    f"{self.log_path}): {self.log_summary()}")
                time.sleep(0.2)
        finally:
            client.close()

    # ------------------------------------------------------------------ state
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stub_pids(self) -> list[int]:
        """Pids of the server's Python-backend stubs (its children, one per model instance)."""
        try:
            return [p.pid for p in psutil.Process(self.pid).children() if STUB_NAME in "".join(p.cmdline()[:1])]
        except (psutil.Error, ValueError):
            return []

    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(self._log_start, f.tell() - 64 * 1024))  # this start's lines only
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def load_failure(self, model: str) -> str | None:
        """The reason Triton gives for `model` failing to load (a Python exception's message), if it logged one."""
        pattern = re.compile(rf"failed to load '{re.escape(model)}' version \d+: "
                             r"(?:Internal: )?(.*?)(?:\\n\\nAt:|\"?$)")
        for line in reversed(self.log_tail(400).splitlines()):
            match = pattern.search(line)
            if match:
                return match.group(1).replace("\\n", " ").strip()
        return None

    def log_summary(self, lines: int = 12, limit: int = 1200) -> str:
        """The log tail on one line, for one-line error messages: the messages of the last `lines` non-empty lines
        (glog prefixes and the option tables dropped) joined by ' | '."""
        kept = []
        for line in self.log_tail(200).splitlines():
            text = GLOG_PREFIX.sub("", line.strip()).strip().strip('"')
            if text and text[0] not in "+|":
                kept.append(text)
        text = " | ".join(kept[-lines:]) or "(the log is empty)"
        return text if len(text) <= limit else "..." + text[-limit:]

    # ------------------------------------------------------------------ stop
    def stop(self, grace_s: float | None = None) -> None:
        """Terminate the server and everything in its process group (SIGKILL after `grace_s`, default the
        stop_timeout_s option); idempotent."""
        with self._lock:
            process = self.process
            if process is None or process is self._stopped:
                return
            pgid = process.pid
            if process.poll() is None:
                _signal_group(pgid, signal.SIGTERM)
                try:
                    process.wait(timeout=self.options.stop_timeout_s if grace_s is None else grace_s)
                except subprocess.TimeoutExpired:
                    pass
            _signal_group(pgid, signal.SIGKILL)  # stubs of a server that died left orphans in the group
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            _wait_group_gone(pgid, 5.0)
            self._remove_shm()
            _RUNNING.discard(self)
            self._stopped = process

    def _remove_shm(self) -> None:
        shm = Path("/dev/shm")
        if shm.is_dir():
            for leftover in shm.glob(f"{self.shm_prefix}*"):
                try:
                    leftover.unlink()
                except OSError:
                    pass

    def __enter__(self) -> "TritonServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def remove_stale_shm() -> None:
    """Remove this project's /dev/shm segments whose client process is gone (a run killed before it cleaned up)."""
    for path in Path("/dev/shm").glob("dlrmbench*"):
        match = SHM_NAME.match(path.name)
        if match and not psutil.pid_exists(int(match.group(1))):
            try:
                path.unlink()
            except OSError:
                pass


def process_end(pid: int) -> str | None:
    """None while process `pid` runs, else how it ended ('signal 9', 'exit status 1'), as /proc tells it for a
    zombie ('exit status unknown' once reaped)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return "exit status unknown"
    if fields[0] not in ("Z", "X"):
        return None
    status = int(fields[49]) if len(fields) > 49 else 0  # exit_code (Linux >= 3.5), as waitpid reports it
    return f"signal {status & 0x7F}" if status & 0x7F else f"exit status {status >> 8}"


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        pass


def _wait_group_gone(pgid: int, timeout: float) -> bool:
    """True once no live (non-zombie) process of group `pgid` is left."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not group_members(pgid):
            return True
        time.sleep(0.05)
    return False


def group_members(pgid: int, zombies: bool = False) -> list[int]:
    """Pids of the processes in process group `pgid`, read from /proc (zombies only if asked)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and (zombies or fields[0] != "Z"):
            members.append(int(entry.name))
    return members


@atexit.register
def _stop_all() -> None:
    for server in list(_RUNNING):
        server.stop()
