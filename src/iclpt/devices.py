"""Which GPU a job runs on: a lease of a free GPU on one box, the scheduler's assignment on SLURM, and no silent
fallback to the CPU.

Snakemake assigns no GPU to a local job (snakemake/snakemake#281): ``--resources gpu=4`` only caps how many GPU
jobs run at once, and every one of them would land on ``cuda:0``. So a job that asks for GPUs (its rule's
``resources: gpu``) calls :func:`lease_gpus` before CUDA starts:

- the GPUs it may use (:func:`gpu_candidates`): on SLURM (``SLURM_JOB_ID`` set) the scheduler's assignment
  (``CUDA_VISIBLE_DEVICES``, else ``SLURM_STEP_GPUS`` / ``SLURM_JOB_GPUS``); elsewhere ``ICLPT_GPUS`` (a count
  ``4`` or ids ``0,2``: the config's ``gpus``, which the Snakefile exports), else ``CUDA_VISIBLE_DEVICES`` when
  the user set it, else the machine's GPUs (``/proc/driver/nvidia/gpus``, ``nvidia-smi -L``);
- fewer candidates than GPUs asked for is a :class:`DeviceError` at once (a job that asks for a GPU never runs on
  the CPU);
- where the scheduler assigned exactly what was asked for (SLURM, one job per allocation), it is used as it is;
  otherwise the job takes a non-blocking ``fcntl.flock`` on one lock file per GPU
  (``$ICLPT_GPU_LOCK_DIR``, default ``<tmp>/iclpt-gpu-locks-<uid>``, one folder per SLURM allocation), trying
  the candidates in order and polling until enough are free. The kernel drops a flock when the process ends,
  however it ends (SIGKILL included), so a killed job never keeps a GPU;
- the leased GPUs become the job's ``CUDA_VISIBLE_DEVICES`` (the job sees them as ``cuda:0``, ``cuda:1``, ...),
  and ``CUBLAS_WORKSPACE_CONFIG`` is set for deterministic cuBLAS, both before CUDA initialises (a lease after
  CUDA started is an error: the mask would not apply).

A job that asks for no GPU gets ``CUDA_VISIBLE_DEVICES=""``: it cannot touch a GPU another job leased.
:func:`job_device` turns the config's ``device`` into the job's: ``auto`` is ``cuda`` when the job asked for a
GPU and ``cpu`` when it did not; ``cuda`` without a GPU request, or without a usable CUDA device, is a
:class:`DeviceError` naming what was found. Standard library only (torch is imported inside the CUDA check).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

GPUS_ENV = "ICLPT_GPUS"
LOCK_DIR_ENV = "ICLPT_GPU_LOCK_DIR"
WAIT_ENV = "ICLPT_GPU_WAIT_S"
#: cuBLAS's deterministic workspace (https://docs.nvidia.com/cuda/cublas/#results-reproducibility)
CUBLAS_WORKSPACE = ":4096:8"
_NVIDIA_PROC = Path("/proc/driver/nvidia/gpus")


class DeviceError(RuntimeError):
    """A job cannot get the device it asked for (no GPU visible, CUDA unusable, every GPU leased too long)."""


# ---- which GPUs a job may use ---------------------------------------------------------------------------------
def _id_list(value: str | None) -> list[str] | None:
    """``"0,2"`` -> ["0", "2"]; ``""`` -> []; None (unset) -> None. SLURM's ``gpu:0,1`` / ``(IDX:0-1)`` forms too."""
    if value is None:
        return None
    value = value.strip()
    if value.startswith("gpu:"):
        value = value[4:]
    ids: list[str] = []
    for part in filter(None, (p.strip() for p in value.split(","))):
        m = re.fullmatch(r"(\d+)-(\d+)", part)
        ids += [str(i) for i in range(int(m.group(1)), int(m.group(2)) + 1)] if m else [part]
    return ids


def machine_gpus() -> list[str]:
    """The NVIDIA GPUs of this machine, as indices ("0", "1", ...): the driver's /proc entries, else
    ``nvidia-smi -L``; [] when there are none (or no driver)."""
    try:
        n = len([p for p in _NVIDIA_PROC.iterdir() if p.is_dir()])
    except OSError:
        n = 0
    if not n and shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        n = len(re.findall(r"^GPU \d+:", out, flags=re.M))
    return [str(i) for i in range(n)]


def on_slurm(env: Mapping[str, str]) -> bool:
    return bool(env.get("SLURM_JOB_ID"))


def gpu_candidates(env: Mapping[str, str] | None = None,
                   detect: Callable[[], list[str]] = machine_gpus) -> tuple[list[str], str]:
    """(GPU ids the job may lease, where they came from): module docstring's order."""
    env = os.environ if env is None else env
    if on_slurm(env):
        for key in ("CUDA_VISIBLE_DEVICES", "SLURM_STEP_GPUS", "SLURM_JOB_GPUS"):
            ids = _id_list(env.get(key))
            if ids is not None:
                return ids, f"the SLURM allocation ({key}={env.get(key)!r})"
        return [], f"the SLURM allocation (job {env.get('SLURM_JOB_ID')} was assigned no GPU)"
    raw = env.get(GPUS_ENV)
    if raw is not None and raw.strip():
        if re.fullmatch(r"\d+", raw.strip()):
            return [str(i) for i in range(int(raw))], f"{GPUS_ENV}={raw} (the config's gpus)"
        return _id_list(raw) or [], f"{GPUS_ENV}={raw!r} (the config's gpus)"
    ids = _id_list(env.get("CUDA_VISIBLE_DEVICES"))
    if ids is not None:
        return ids, f"CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES')!r}"
    return detect(), "this machine (/proc/driver/nvidia/gpus, nvidia-smi -L)"


# ---- the lease ------------------------------------------------------------------------------------------------
@dataclass
class Lease:
    """The GPUs a job holds: their ids, how it got them (``lease``, ``slurm`` or ``none``), the open lock files
    (closing them, or the process ending, releases the GPUs)."""

    gpus: list[str]
    how: str
    source: str = ""
    _locks: list[int] = field(default_factory=list, repr=False)

    def release(self) -> None:
        for fd in self._locks:
            os.close(fd)
        self._locks.clear()

    @property
    def visible(self) -> str:
        return ",".join(self.gpus)


#: leases of this process, kept open until it exits
_HELD: list[Lease] = []


def lock_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where the per-GPU lock files live: ``$ICLPT_GPU_LOCK_DIR``, else ``<tmp>/iclpt-gpu-locks-<uid>`` (with the
    SLURM job id under SLURM: GPU ids are only comparable within one allocation)."""
    env = os.environ if env is None else env
    if env.get(LOCK_DIR_ENV):
        return Path(env[LOCK_DIR_ENV])
    name = f"iclpt-gpu-locks-{os.getuid()}"
    if on_slurm(env):
        name += f"-slurm{env['SLURM_JOB_ID']}"
    return Path(tempfile.gettempdir()) / name


def try_lock(path: Path, note: str = "") -> int | None:
    """An open fd holding an exclusive flock on ``path``, or None when another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} {note}\n".encode())
    return fd


def holder(path: Path) -> str:
    """What the last holder of a lock file wrote (its pid and job), for messages."""
    try:
        return path.read_text(encoding="utf-8").strip() or "?"
    except OSError:
        return "?"


def acquire(n: int, candidates: Sequence[str], directory: Path, wait_s: float = 0.0, poll_s: float = 1.0,
            note: str = "", say: Callable[[str], None] | None = None) -> Lease:
    """Lock ``n`` of ``candidates`` (first free first), polling up to ``wait_s`` seconds; DeviceError after."""
    deadline = time.monotonic() + wait_s
    warned = False
    while True:
        held: list[tuple[str, int]] = []
        for gpu in candidates:
            fd = try_lock(directory / f"gpu{gpu}.lock", note)
            if fd is not None:
                held.append((gpu, fd))
                if len(held) == n:
                    return Lease([g for g, _ in held], "lease", str(directory), [fd for _, fd in held])
        for _, fd in held:  # not enough: give back what we took, so two jobs never deadlock on halves
            os.close(fd)
        if time.monotonic() >= deadline:
            busy = "; ".join(f"GPU {g}: {holder(directory / f'gpu{g}.lock')}" for g in candidates)
            raise DeviceError(f"no {n} free GPU(s) of {len(candidates)} after {wait_s:.0f} s (locks in {directory}: "
                              f"{busy}); is --resources gpu larger than the GPUs of this machine?")
        if say and not warned:
            say(f"waiting for {n} free GPU(s): all of {', '.join(candidates)} are leased (locks in {directory})")
            warned = True
        time.sleep(poll_s)


def _cuda_started() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


def lease_gpus(n: int, env: dict[str, str] | None = None, note: str = "", wait_s: float | None = None,
               detect: Callable[[], list[str]] = machine_gpus, say: Callable[[str], None] | None = None,
               poll_s: float = 1.0) -> Lease:
    """The GPUs of a job asking for ``n`` (module docstring); sets ``CUDA_VISIBLE_DEVICES`` (and
    ``CUBLAS_WORKSPACE_CONFIG``) in ``env`` (default ``os.environ``). The lease lasts as long as the process."""
    env = os.environ if env is None else env
    if env is os.environ and _cuda_started():
        raise RuntimeError("lease_gpus must run before CUDA initialises (CUDA_VISIBLE_DEVICES would not apply)")
    n = int(n or 0)
    if n <= 0:
        env["CUDA_VISIBLE_DEVICES"] = ""
        return Lease([], "none", "the job asks for no GPU (resources gpu = 0)")
    candidates, source = gpu_candidates(env, detect)
    if len(candidates) < n:
        raise DeviceError(f"this job asks for {n} GPU(s) (its rule's resources gpu) but {source} offers "
                          f"{len(candidates)}: {', '.join(candidates) or 'none'}. It will not run on the CPU instead: "
                          f"run it where a GPU is visible, set the config's gpus / {GPUS_ENV}, or give the rule "
                          f"gpu: 0 and device: cpu")
    if on_slurm(env) and len(candidates) == n:
        lease = Lease(list(candidates), "slurm", source)
    else:
        if wait_s is None:
            wait_s = float(env.get(WAIT_ENV) or 24 * 3600)
        lease = acquire(n, candidates, lock_dir(env), wait_s=wait_s, poll_s=poll_s, note=note, say=say)
        lease.source = f"{lease.source} (of {source})"
    env["CUDA_VISIBLE_DEVICES"] = lease.visible
    env.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    if env is os.environ:
        _HELD.append(lease)
    return lease


# ---- the job's device: no silent fallback ----------------------------------------------------------------------
def job_device(device: str, lease: Lease) -> str:
    """``cpu`` or ``cuda`` for a job configured with ``device`` (cpu | cuda | auto) that holds ``lease``: auto is
    cuda exactly when the job asked for a GPU. A CUDA job checks at once that CUDA works (:func:`check_cuda`)."""
    if device not in ("cpu", "cuda", "auto"):
        raise ValueError(f"unknown device {device!r}; expected cpu, cuda or auto")
    if device == "cpu":
        return "cpu"
    if not lease.gpus:
        if device == "cuda":
            raise DeviceError("device: cuda, but this job asks for no GPU (its rule's resources gpu is 0): give the "
                              "rule gpu: 1 (config resources.<rule>.gpu or the profile's set-resources)")
        return "cpu"
    check_cuda(len(lease.gpus), lease)
    return "cuda"


def check_cuda(n: int, lease: Lease | None = None) -> None:
    """DeviceError unless torch sees at least ``n`` CUDA devices, naming what was found."""
    import torch

    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if found >= n:
        return
    why = [f"torch {torch.__version__} built for CUDA {torch.version.cuda}" if torch.version.cuda
           else f"torch {torch.__version__} is a CPU-only build"]
    why.append(f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}")
    if lease is not None:
        why.append(f"GPUs {lease.visible or 'none'} from {lease.source}")
    if not Path("/dev/nvidia0").exists() and not Path("/dev/nvidiactl").exists():
        why.append("no /dev/nvidia* device (no driver, or a job without a GPU)")
    raise DeviceError(f"this job asks for {n} GPU(s) but torch sees {found} CUDA device(s) ({'; '.join(why)}). "
                      f"It fails now rather than run on the CPU.")


def job_setup(device: str, gpus: int, note: str = "", say: Callable[[str], None] | None = None) -> tuple[str, Lease]:
    """What a GPU-capable job script calls first: lease its GPUs, then its device (:func:`job_device`). A job
    configured for the CPU leases nothing and sees no GPU, whatever its rule asks for."""
    lease = lease_gpus(0 if device == "cpu" else gpus, note=note, say=say)
    dev = job_device(device, lease)
    if say:
        say(f"device {dev}: {lease.how} GPU(s) {lease.visible or '-'} from {lease.source}")
    return dev, lease


def describe_device(device: object) -> dict[str, object]:
    """What a job records of the device it ran on: the device, the GPU's name and compute capability (CUDA),
    CUDA_VISIBLE_DEVICES."""
    import torch

    dev = torch.device(device) if not isinstance(device, torch.device) else device
    out: dict[str, object] = {"device": dev.type, "gpu_name": None, "compute_capability": None,
                              "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    if dev.type == "cuda":
        idx = dev.index if dev.index is not None else torch.cuda.current_device()
        out["gpu_name"] = torch.cuda.get_device_name(idx)
        out["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability(idx)))
    return out


def cpu_has_bf16() -> bool:
    """CPU with native bf16 matmul (AMX or AVX512-BF16)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags
