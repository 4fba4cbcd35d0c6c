"""A one-node SLURM cluster on localhost, for tests (recipe: /work/shared/SLURM-LOCAL.md).

    python tests/slurm_cluster.py up [--dir DIR]     # install if missing, start munged/slurmctld/slurmd
    python tests/slurm_cluster.py down [--dir DIR]   # stop the daemons this script started, by PID
    python tests/slurm_cluster.py status [--dir DIR]

From Python (pytest fixture): ``with LocalSlurm(dir) as cluster: subprocess.run(..., env=cluster.env())``.

Design:
- Needs root and apt-get (Debian's slurm-wlm + munge). ``unavailable_reason()`` says why not, for a skip.
- Everything lives in one private folder (default /tmp/iclpt-slurm): slurm.conf, gres.conf, state, spool,
  logs, pids. Clients find the cluster through ``SLURM_CONF`` (``cluster.env()``) and, because the Snakemake
  jobstep plugin strips every SLURM_* variable (SLURM_CONF included) before its inner ``srun``, through a symlink
  /etc/slurm/slurm.conf -> that file, created only where no slurm.conf exists and removed by ``down``.
- No systemd: munged daemonises (pid from its pid file, only stopped if this script started it); slurmctld and
  slurmd run in the foreground (-D) as children, so their PIDs are known exactly. Teardown kills those PIDs.
- Fake GPUs (char devices like /dev/null) in gres.conf, so ``--gpus=1`` / ``--gres=gpu:1`` requests are
  scheduled and CUDA_VISIBLE_DEVICES is set in the job, without hardware.
- ``MinJobAge=600`` keeps finished jobs visible to ``squeue``/``scontrol show job`` (accounting is disabled,
  so the Snakemake plugin must use ``slurm-status-command: squeue``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_DIR = Path(os.environ.get("ICLPT_SLURM_DIR", "/tmp/iclpt-slurm"))
N_FAKE_GPUS = 2
PARTITION = "debug"
DAEMONS = ("/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/sbin/munged")


def unavailable_reason() -> str | None:
    """Why a cluster cannot be brought up here (None when it can)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root (to install slurm-wlm/munge and start slurmctld, slurmd, munged)"
    if not all(Path(d).exists() for d in DAEMONS) and shutil.which("apt-get") is None:
        return "slurm-wlm/munge are not installed and apt-get is unavailable to install them"
    return None


def _run(cmd, check=True, **kw):
    return subprocess.run(cmd, check=check, text=True, capture_output=True, **kw)


def ensure_installed(log=print) -> bool:
    """apt-get install slurm-wlm munge when a daemon is missing. Returns True when it installed."""
    if all(Path(d).exists() for d in DAEMONS) and shutil.which("sbatch"):
        return False
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "slurm-wlm", "munge"]
    log("installing slurm-wlm and munge with apt-get")
    r = subprocess.run(cmd, env=env, text=True, capture_output=True)
    if r.returncode != 0:  # package lists missing or stale
        _run(["apt-get", "update", "-q"], env=env)
        r = subprocess.run(cmd, env=env, text=True, capture_output=True)
    if r.returncode != 0:
        raise RuntimeError(f"apt-get install slurm-wlm munge failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child counts as dead
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _node_line(hostname: str) -> str:
    """NodeName line from `slurmd -C` (real CPU topology), with memory capped and fake GPUs added."""
    out = _run(["/usr/sbin/slurmd", "-C"]).stdout
    line = next(row for row in out.splitlines() if row.startswith("NodeName="))
    fields = dict(kv.split("=", 1) for kv in line.split())
    real_mem = int(fields.get("RealMemory", "4000"))
    keep = ["CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore"]
    parts = [f"NodeName={hostname}", "NodeAddr=127.0.0.1"]
    parts += [f"{k}={fields[k]}" for k in keep if k in fields]
    parts += [f"RealMemory={max(1000, int(real_mem * 0.8))}", "State=UNKNOWN", f"Gres=gpu:{N_FAKE_GPUS}"]
    return " ".join(parts)


def _cluster_running_elsewhere() -> bool:
    """Another slurmd still alive (e.g. a second LocalSlurm folder): keep the shared fake GPU nodes."""
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if (p / "comm").read_text().strip() == "slurmd" and _pid_alive(int(p.name)):
                    return True
            except OSError:
                pass
    return False


class LocalSlurm:
    def __init__(self, root: Path | str = DEFAULT_DIR, log=print):
        self.root = Path(root).resolve()
        self.log = log
        self.conf = self.root / "etc" / "slurm.conf"
        self.state_file = self.root / "pids.json"
        self.hostname = socket.gethostname().split(".")[0]
        self.timings: dict[str, float] = {}

    # ---- client side ---------------------------------------------------------------------------
    def env(self, base: dict | None = None) -> dict:
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(self.conf)
        return env

    def cmd(self, *args, check=True) -> str:
        return _run(list(args), check=check, env=self.env()).stdout

    def node_state(self) -> str:
        try:  # a client started before slurmctld listens can block for a minute: bound it
            r = _run(["sinfo", "-h", "-N", "-o", "%t %G"], check=False, env=self.env(), timeout=3)
        except subprocess.TimeoutExpired:
            return "error: sinfo timed out"
        return r.stdout.strip() if r.returncode == 0 else f"error: {r.stderr.strip()}"

    # ---- bring-up ------------------------------------------------------------------------------
    def _write_conf(self):
        etc = self.root / "etc"
        for d in ("etc", "state", "spool", "log"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        gpus = []
        for i in range(N_FAKE_GPUS):
            dev = Path(f"/dev/iclptfakegpu{i}")
            if not dev.exists():
                os.mknod(dev, 0o666 | 0o020000, os.makedev(1, 3))  # a char device like /dev/null
            gpus.append(str(dev))
        (etc / "gres.conf").write_text(
            f"NodeName={self.hostname} Name=gpu File=/dev/iclptfakegpu[0-{N_FAKE_GPUS - 1}]\n"
        )
        r = self.root
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=iclpttest",
                    f"SlurmctldHost={self.hostname}(127.0.0.1)",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    "AuthType=auth/munge",
                    f"StateSaveLocation={r}/state",
                    f"SlurmdSpoolDir={r}/spool",
                    f"SlurmctldPidFile={r}/slurmctld.pid",
                    f"SlurmdPidFile={r}/slurmd.pid",
                    f"SlurmctldLogFile={r}/log/slurmctld.log",
                    f"SlurmdLogFile={r}/log/slurmd.log",
                    "SlurmctldPort=6817",
                    "SlurmdPort=6818",
                    "ProctrackType=proctrack/linuxproc",  # no cgroup plugin in containers
                    "TaskPlugin=task/none",
                    "SchedulerType=sched/backfill",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core_Memory",
                    "AccountingStorageType=accounting_storage/none",
                    "JobAcctGatherType=jobacct_gather/none",
                    "JobCompType=jobcomp/none",
                    "MinJobAge=600",  # finished jobs stay visible to squeue (the plugin needs >= 120)
                    "ReturnToService=2",
                    "MpiDefault=none",
                    "SchedulerParameters=sched_interval=1",
                    "GresTypes=gpu",
                    _node_line(self.hostname),
                    f"PartitionName={PARTITION} Nodes={self.hostname} Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )

    def _link_etc_conf(self) -> str | None:
        """Jobs' own `srun` calls read /etc/slurm/slurm.conf (SLURM_CONF does not reach the job step), so point
        it at this cluster's file: a symlink made here and removed by down(). A real file there is never touched."""
        etc = Path("/etc/slurm/slurm.conf")
        if etc.is_symlink():
            if etc.resolve() == self.conf:
                return str(etc)
            if not etc.resolve().exists() or "iclpt" in str(etc.resolve()):  # stale link of an earlier run
                etc.unlink()
        if etc.exists():
            raise RuntimeError(f"{etc} exists and is not ours; refusing to replace it")
        etc.parent.mkdir(parents=True, exist_ok=True)
        etc.symlink_to(self.conf)
        return str(etc)

    def _start_munge(self) -> int | None:
        """Start munged unless one is running. Returns its PID when this call started it."""
        pidfile = Path("/run/munge/munged.pid")
        if pidfile.exists() and _pid_alive(int(pidfile.read_text().split()[0])):
            if _run(["sh", "-c", "munge -n | unmunge"], check=False).returncode == 0:
                self.log("munged already running; reusing it (not stopping it later)")
                return None
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        os.chmod("/run/munge", 0o755)
        if not Path("/etc/munge/munge.key").exists():
            _run(["runuser", "-u", "munge", "--", "mungekey", "--create"])
        _run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"])
        for _ in range(50):
            if pidfile.exists() and pidfile.read_text().strip():
                break
            time.sleep(0.1)
        pid = int(pidfile.read_text().split()[0])
        _run(["sh", "-c", "munge -n | unmunge"])
        return pid

    def _spawn(self, name: str, argv: list[str]) -> int:
        out = open(self.root / "log" / f"{name}.out", "ab")
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=self.env(), start_new_session=True)
        out.close()
        return p.pid

    def up(self, timeout: float = 90) -> LocalSlurm:
        t0 = time.time()
        installed = ensure_installed(self.log)
        self.timings["install_s"] = time.time() - t0
        self.timings["installed_now"] = installed
        if self.state_file.exists():
            self.down()
        if self.conf.exists():  # (without a conf file, scontrol spends a minute on DNS SRV lookups)
            try:
                ping = _run(["scontrol", "ping"], check=False, env=self.env(), timeout=5).stdout
            except subprocess.TimeoutExpired:
                ping = ""
            if "UP" in ping:
                raise RuntimeError(f"a slurmctld not started by this script answers already:\n{ping}")
        self._write_conf()
        pids = {"munged": self._start_munge(), "etc_link": self._link_etc_conf()}
        self._save(pids)
        pids["slurmctld"] = self._spawn("slurmctld", ["/usr/sbin/slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._save(pids)
        pids["slurmd"] = self._spawn("slurmd", ["/usr/sbin/slurmd", "-D", "-f", str(self.conf)])
        self._save(pids)
        deadline = time.time() + timeout
        state = ""
        while time.time() < deadline:
            new_state = self.node_state()
            if new_state != state:
                self.log(f"  {time.time() - t0:5.1f}s node: {new_state}")
            state = new_state
            if state.startswith("idle") and f"gpu:{N_FAKE_GPUS}" in state:
                break
            if state.split()[:1] and state.split()[0].rstrip("*~#") in ("down", "drain", "drained", "unk"):
                _run(["scontrol", "update", f"nodename={self.hostname}", "state=resume"], check=False, env=self.env())
            for name in ("slurmctld", "slurmd"):
                if not _pid_alive(pids[name]):
                    log = (self.root / "log" / f"{name}.out").read_text()[-2000:]
                    self.down()
                    raise RuntimeError(f"{name} exited during bring-up:\n{log}")
            time.sleep(0.5)
        else:
            logs = {n: (self.root / "log" / f"{n}.log").read_text()[-2000:] for n in ("slurmctld", "slurmd")
                    if (self.root / "log" / f"{n}.log").exists()}
            self.down()
            raise RuntimeError(f"node not idle after {timeout}s (sinfo: {state!r}); logs: {logs}")
        self.timings["bringup_s"] = time.time() - t0
        self.log(f"SLURM up in {self.timings['bringup_s']:.1f}s: node {self.hostname} {state}")
        return self

    # ---- teardown ------------------------------------------------------------------------------
    def _save(self, pids):
        self.state_file.write_text(json.dumps(pids))

    def down(self):
        if not self.state_file.exists():
            return
        pids = json.loads(self.state_file.read_text())
        if pids.get("slurmctld") and _pid_alive(pids["slurmctld"]):
            # cancel jobs left on this private cluster so no slurmstepd outlives it
            _run(["scancel", "--partition", PARTITION], check=False, env=self.env())
        for name in ("slurmd", "slurmctld", "munged"):
            pid = pids.get(name)
            if not pid or not _pid_alive(pid):
                continue
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                try:  # reap our own children
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
                if not _pid_alive(pid):
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
        for i in range(N_FAKE_GPUS):  # our fake GPU device nodes (char 1,3 like /dev/null)
            dev = Path(f"/dev/iclptfakegpu{i}")
            if dev.exists() and not _cluster_running_elsewhere():
                dev.unlink()
        link = pids.get("etc_link")
        if link and Path(link).is_symlink() and Path(link).resolve() == self.conf:
            Path(link).unlink()
        self.state_file.unlink()
        self.log("SLURM daemons stopped")

    def __enter__(self):
        return self.up()

    def __exit__(self, *exc):
        self.down()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["up", "down", "status"])
    ap.add_argument("--dir", default=str(DEFAULT_DIR))
    a = ap.parse_args(argv)
    c = LocalSlurm(a.dir)
    if a.action == "up":
        reason = unavailable_reason()
        if reason:
            sys.exit(f"cannot bring up SLURM: {reason}")
        c.up()
        print(f"export SLURM_CONF={c.conf}")
    elif a.action == "down":
        c.down()
    else:
        print(c.node_state())
        if c.state_file.exists():
            print(c.state_file.read_text())


if __name__ == "__main__":
    main()
