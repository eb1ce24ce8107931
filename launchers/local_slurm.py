"""A one-node SLURM cluster on this machine, for tests and for trying the SLURM launcher locally.

    python -m launchers.local_slurm start [--dir DIR] [--cpus N]   # prints `export SLURM_CONF=...`
    python -m launchers.local_slurm stop  [--dir DIR]
    python -m launchers.local_slurm status [--dir DIR]

Needs root and the Debian packages ``slurmctld slurmd slurm-client munge slurmdbd mariadb-server``
(SLURM 22.05, MariaDB 10.11).  Everything the cluster writes -- its own munge key and socket,
slurm.conf and slurmdbd.conf, the accounting database, state, spool, logs, pid files -- lives under
one folder (default ``/tmp/seats-exp-slurm``), and the daemons listen on free ports of 127.0.0.1
only, so the cluster touches nothing under /etc and can run next to another one.

Job accounting: a private MariaDB server (its own data folder, TCP on 127.0.0.1 only, no grant
tables: a throw-away test database) behind ``slurmdbd``, so ``sacct`` works.  submitit reads job
states with ``sacct``; without accounting it never sees a cancelled job and waits forever.  Client commands (sbatch, squeue,
and submitit, which calls them) find it through ``SLURM_CONF=<dir>/slurm.conf``; ``start`` prints that
line and :func:`client_env` returns it for Python callers.

Settings that work on a single unprivileged-cgroup machine (see the project's environment notes):
``proctrack/linuxproc``, ``task/none``, ``select/cons_tres`` with ``CR_CPU``, accounting through
``accounting_storage/slurmdbd`` (no per-job resource gathering).  ``stop`` ends the daemons by the
PIDs in their pid files only (slurmd, slurmctld, slurmdbd, mariadbd, munged, in that order).
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DIR = Path("/tmp/seats-exp-slurm")
PARTITION = "local"
REQUIRED_TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo", "slurmdbd", "sacct",
                  "sacctmgr", "mariadbd", "mariadb-install-db")
CLUSTER_NAME = "seatsexp"
APT_PACKAGES = "slurmctld slurmd slurm-client munge slurmdbd mariadb-server"


@dataclass
class LocalCluster:
    root: Path

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def munge_dir(self) -> Path:
        return self.root / "munge"

    @property
    def munge_socket(self) -> Path:
        return self.munge_dir / "munge.socket"

    @property
    def dbd_conf(self) -> Path:
        return self.root / "slurmdbd.conf"  # found next to slurm.conf (SLURM_CONF's folder)

    @property
    def db_dir(self) -> Path:
        return self.root / "db"

    def pid_files(self) -> dict[str, Path]:
        return {"slurmd": self.root / "run" / "slurmd.pid", "slurmctld": self.root / "run" / "slurmctld.pid",
                "slurmdbd": self.root / "run" / "slurmdbd.pid", "mariadbd": self.db_dir / "mariadbd.pid",
                "munged": self.munge_dir / "munged.pid"}

    def client_env(self) -> dict[str, str]:
        """Environment additions for sbatch/squeue/submitit to reach this cluster."""
        return {"SLURM_CONF": str(self.conf)}


def missing_tools() -> list[str]:
    return [t for t in REQUIRED_TOOLS if shutil.which(t) is None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 1024


def _slurm_conf(c: LocalCluster, host: str, cpus: int, memory_mb: int, ctld_port: int, slurmd_port: int,
                dbd_port: int) -> str:
    r = c.root
    return f"""\
# Written by launchers/local_slurm.py: a one-node cluster on {host}.
ClusterName={CLUSTER_NAME}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={c.munge_socket}
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/slurmd.%n
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
PlugStackConfig={r}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={dbd_port}
AccountingStoragePass={c.munge_socket}
JobCompType=jobcomp/none
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
# submitit ignores SIGTERM (it waits for SIGKILL): a cancelled job gets its SIGKILL 1 s later
KillWait=1
MinJobAge=300
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
"""


def _slurmdbd_conf(c: LocalCluster, dbd_port: int, db_port: int) -> str:
    r = c.root
    return f"""\
# Written by launchers/local_slurm.py: job accounting for the one-node cluster.
AuthType=auth/munge
AuthInfo=socket={c.munge_socket}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={dbd_port}
SlurmUser=root
LogFile={r}/log/slurmdbd.log
PidFile={r}/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={db_port}
StorageUser=root
StorageLoc=slurm_acct_db
CommunicationParameters=NoInAddrAny
"""


_DB_OPTIONS = ("--innodb-buffer-pool-size=16M", "--innodb-log-file-size=4M")


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _start_database(c: LocalCluster, db_port: int) -> None:
    """A private MariaDB server for slurmdbd: its own data folder, TCP on 127.0.0.1 only."""
    data = c.db_dir / "data"
    data.mkdir(parents=True, exist_ok=True)
    proc = _run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root", "--skip-test-db",
                 "--auth-root-authentication-method=normal", *_DB_OPTIONS])
    if proc.returncode != 0:
        raise RuntimeError(f"local SLURM: mariadb-install-db failed: {(proc.stderr or proc.stdout).strip()[-2000:]}")
    log = c.root / "log" / "mariadbd.log"
    cmd = ["mariadbd", "--no-defaults", f"--datadir={data}", "--user=root", "--bind-address=127.0.0.1",
           f"--port={db_port}", f"--socket={c.db_dir / 'mariadbd.sock'}", f"--pid-file={c.pid_files()['mariadbd']}",
           f"--log-error={log}", "--skip-grant-tables", "--skip-name-resolve", *_DB_OPTIONS]
    # mariadbd does not fork: its own session, no terminal, stopped by its pid file
    subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True, close_fds=True)
    _wait(lambda: _port_open(db_port) and c.pid_files()["mariadbd"].exists(), 30, "mariadbd", [log])


def _start_accounting(c: LocalCluster, env: dict, dbd_port: int, db_port: int) -> None:
    _start_database(c, db_port)
    c.dbd_conf.write_text(_slurmdbd_conf(c, dbd_port, db_port))
    os.chmod(c.dbd_conf, 0o600)  # slurmdbd refuses a config readable by others
    proc = _run(["slurmdbd"], env=env)  # forks; reads <SLURM_CONF folder>/slurmdbd.conf
    if proc.returncode != 0:
        raise RuntimeError(f"local SLURM: slurmdbd failed to start: {proc.stderr.strip()}")
    _wait(lambda: _port_open(dbd_port), 30, "slurmdbd", [c.root / "log/slurmdbd.log"])
    out = _run(["sacctmgr", "-i", "add", "cluster", CLUSTER_NAME], env=env)
    if out.returncode != 0 and "already exists" not in (out.stdout + out.stderr).lower():
        raise RuntimeError(f"local SLURM: sacctmgr add cluster failed: {(out.stderr or out.stdout).strip()}")


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False, **kw)


def _wait(predicate, timeout: float, what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    tails = []
    for log in logs:
        if log.exists():
            tails.append(f"--- {log}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:]))
    raise RuntimeError(f"local SLURM: {what} did not come up within {timeout:.0f}s\n" + "\n".join(tails))


def _start_munge(c: LocalCluster) -> None:
    munge = pwd.getpwnam("munge")
    c.munge_dir.mkdir(parents=True, exist_ok=True)
    key = c.munge_dir / "munge.key"
    if not key.exists():
        key.write_bytes(os.urandom(1024))
    for p in (c.munge_dir, key):
        os.chown(p, munge.pw_uid, munge.pw_gid)
    os.chmod(c.munge_dir, 0o700)
    os.chmod(key, 0o600)
    cmd = ["munged", f"--socket={c.munge_socket}", f"--key-file={key}", f"--pid-file={c.pid_files()['munged']}",
           f"--log-file={c.munge_dir / 'munged.log'}", f"--seed-file={c.munge_dir / 'munged.seed'}", "--force"]

    def as_munge():
        os.setgid(munge.pw_gid)
        os.setgroups([])
        os.setuid(munge.pw_uid)

    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False, preexec_fn=as_munge)
    if proc.returncode != 0:
        raise RuntimeError(f"local SLURM: munged failed: {proc.stderr.strip() or proc.stdout.strip()}")
    _wait(lambda: c.munge_socket.exists(), 15, "munged", [c.munge_dir / "munged.log"])


def _node_ready(c: LocalCluster, env: dict) -> bool:
    out = _run(["sinfo", "-h", "-o", "%t"], env=env)
    states = out.stdout.split()
    return out.returncode == 0 and bool(states) and all(s.rstrip("*") in ("idle", "mix", "alloc") for s in states)


def start(root: Path = DEFAULT_DIR, cpus: int | None = None) -> LocalCluster:
    """Bring the cluster up (stopping a previous one in the same folder first); return it once the node is idle."""
    if os.geteuid() != 0:
        raise RuntimeError("local SLURM: start needs root (the daemons run as root, munged as user munge)")
    missing = missing_tools()
    if missing:
        raise RuntimeError(f"local SLURM: missing programs {missing} "
                           f"(apt-get install -y --no-install-recommends {APT_PACKAGES})")
    c = LocalCluster(Path(root))
    stop(c.root)
    if c.root.exists():
        shutil.rmtree(c.root)
    for sub in ("state", "spool", "run", "log"):
        (c.root / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(c.root, 0o755)  # munged (user munge) must reach its own folder inside
    (c.root / "plugstack.conf").write_text("")
    host = socket.gethostname().split(".")[0]
    cpus = cpus or os.cpu_count() or 1
    dbd_port, db_port = _free_port(), _free_port()
    c.conf.write_text(_slurm_conf(c, host, cpus, max(_memory_mb() - 1024, 512), _free_port(), _free_port(), dbd_port))

    env = {**os.environ, **c.client_env()}
    try:
        _start_munge(c)
        _start_accounting(c, env, dbd_port, db_port)
    except (RuntimeError, OSError, subprocess.TimeoutExpired):
        stop(c.root)
        raise
    for daemon in ("slurmctld", "slurmd"):
        # -i: ignore state left by an earlier cluster; both fork and write their pid file.
        cmd = [daemon, "-f", str(c.conf)] + (["-i"] if daemon == "slurmctld" else ["-N", host])
        proc = _run(cmd, env=env)
        if proc.returncode != 0:
            stop(c.root)
            raise RuntimeError(f"local SLURM: {daemon} failed to start: {proc.stderr.strip()}")
    try:
        _wait(lambda: _node_ready(c, env), 30, "the node", [c.root / "log/slurmctld.log", c.root / "log/slurmd.log"])
    except RuntimeError:
        stop(c.root)
        raise
    return c


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie still answers kill(0); look at its state
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _cancel_jobs(c: LocalCluster, timeout: float) -> None:
    """Cancel every job and wait for the queue to drain, so no job step outlives the daemons."""
    env = {**os.environ, **c.client_env()}
    try:
        jobs = _run(["squeue", "-h", "-o", "%i"], env=env).stdout.split()
        if jobs:
            _run(["scancel", *jobs], env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = _run(["squeue", "-h", "-o", "%i"], env=env)
            if out.returncode != 0 or not out.stdout.strip():
                return
            time.sleep(0.2)
    except (OSError, subprocess.TimeoutExpired):
        return


def _cluster_processes(c: LocalCluster) -> list[int]:
    """Processes this cluster started that survived its daemons: job steps (slurmstepd runs in the
    cluster's log folder) and everything below them."""
    root = str(c.root.resolve())
    parent: dict[int, int] = {}
    steps = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        pid = int(proc.name)
        try:
            parent[pid] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if (proc / "cmdline").read_bytes().startswith(b"slurmstepd") and os.readlink(proc / "cwd").startswith(root):
                steps.append(pid)
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = set(steps), list(steps)
    while frontier:
        p = frontier.pop()
        for child, ppid in parent.items():
            if ppid == p and child not in found:
                found.add(child)
                frontier.append(child)
    return sorted(found)


def stop(root: Path = DEFAULT_DIR, timeout: float = 15.0) -> list[str]:
    """Stop the cluster in ``root``: cancel its jobs, end the daemons by their pid files, then any
    job process left behind; return the names of the daemons stopped."""
    c = LocalCluster(Path(root))
    pids = {name: _pid(path) for name, path in c.pid_files().items()}
    if pids["slurmctld"] is not None and _alive(pids["slurmctld"]):
        _cancel_jobs(c, timeout)
    stopped = []
    # slurmd first (it may still report to slurmctld), then slurmctld, its accounting, munge last
    for name in ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged"):
        pid = pids[name]
        if pid is None or not _alive(pid):
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        stopped.append(name)
    if c.root.exists():
        for pid in _cluster_processes(c):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return stopped


def status(root: Path = DEFAULT_DIR) -> dict[str, bool]:
    c = LocalCluster(Path(root))
    return {name: (pid := _pid(path)) is not None and _alive(pid) for name, path in c.pid_files().items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launchers.local_slurm", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("start", "stop", "status"))
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"cluster folder (default {DEFAULT_DIR})")
    parser.add_argument("--cpus", type=int, default=None, help="CPUs of the node (default: all)")
    args = parser.parse_args(argv)
    if args.action == "start":
        c = start(args.dir, args.cpus)
        print(f"export SLURM_CONF={c.conf}")
        print(f"# local SLURM is up (partition {PARTITION}); stop it with: python -m launchers.local_slurm stop --dir {c.root}",
              file=sys.stderr)
    elif args.action == "stop":
        names = stop(args.dir)
        print("stopped: " + (", ".join(names) if names else "nothing was running"), file=sys.stderr)
    else:
        for name, up in status(args.dir).items():
            print(f"{name}: {'running' if up else 'stopped'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
