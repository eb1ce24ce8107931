"""Data parallel inside one job: G tasks share one sweep point's benchmark.

Design (one run folder, G processes, one ``result.json``)
--------------------------------------------------------
* **Who am I.** :func:`detect` reads the job's ranks from, in order: a submitit job
  (``submitit.JobEnvironment``: SLURM or the local executor, ``tasks_per_node`` tasks), a plain
  ``srun`` step (``SLURM_PROCID`` / ``SLURM_STEP_NUM_TASKS`` / ``SLURM_LOCALID``; a batch script
  without srun is one process however many tasks it asked for), or ``torchrun``
  (``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``).  Nothing else is configuration: one task means the
  ordinary single-process run.  The rendezvous address is the job's first host
  (``MASTER_ADDR`` / ``MASTER_PORT`` win when set; otherwise the port is derived from the job id, so
  the tasks of one job agree without talking).
* **Process group.** :func:`init` starts ``torch.distributed`` with NCCL when CUDA is available
  (each task on GPU ``local_rank``) and gloo on CPU, with a long collective timeout because ranks
  wait for the slowest shard.  Rank 0 prepares first -- generates missing data, loads the model
  (which writes a tiny checkpoint or fills the hub cache on first use) -- while the others wait at
  a barrier, so no two processes write the same files; lmms-eval's task folder is written once per
  rank (rank 0 in the run folder, the others in a temporary folder).
* **Every rank runs the same lmms-eval evaluation; only generation is sharded.**  lmms-eval scores
  every document it builds, so rather than making it skip documents, each rank runs
  ``simple_evaluate`` over *all* documents as a single process (:func:`single_process_view` hides
  torchrun's variables so lmms-eval does not shard a second time), and the model wrapper's
  ``generate_until`` *generates* only the documents it owns -- ``doc_id % world_size == rank``
  (:meth:`Shard.owns`).  At the end of ``generate_until`` the ranks swap their answers with one
  ``all_gather_object`` (:meth:`Shard.exchange`), so every rank returns the full, identical answer
  list; scoring (parsing, accuracy) is cheap and deterministic, so all ranks compute the same
  scores and rank 0's are the ones kept.  Ownership by ``doc_id`` (not by position) keeps a
  document with the same owner whatever the request order, and a resumed run may use a different
  number of tasks: answers already on disk are reused by whichever rank meets them.
* **Files.** Rank k appends its per-sample records, stamped ``"rank": k``, to
  ``samples.rank<k>.jsonl`` (no two processes append to one file).  After the evaluation, rank 0
  merges ``samples.jsonl`` and every rank file into ``samples.jsonl`` (atomically, sorted by task
  and doc id, a resumed sample's last record winning) and removes the rank files; then it writes
  the single ``result.json`` and the W&B run.  The other ranks wait at a barrier and return rank
  0's result.
* **Resume.** Every rank reads the answers already recorded in ``samples.jsonl`` and in all rank
  files (:func:`iter_run_samples`) before it starts; a recorded answer is never generated again.
* **Failure.** A rank that dies makes the others fail at their next collective (gloo reports the
  closed connection within seconds; a hung, not dead, rank holds them until the process group's
  timeout or the job's time limit).  Relaunching -- or submitit requeueing a preempted job --
  resumes from the files, with any number of tasks (a single process folds the rank files in too).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from seats_exp.store import iter_jsonl

log = logging.getLogger(__name__)

# Ranks wait for the slowest shard at the answer exchange; the job's own time limit is the real bound.
COLLECTIVE_TIMEOUT = timedelta(hours=24)
_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    source: str = "single"  # submitit | slurm | torchrun | single

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _port_for_job(job_id: str) -> int:
    return random.Random(str(job_id)).randint(20000, 60000)


def first_host(nodelist: str) -> str:
    """First host of a SLURM node list: ``gpu[07-09,12],cpu1`` -> ``gpu07``."""
    bracket, comma = nodelist.find("["), nodelist.find(",")
    if bracket == -1 or (comma != -1 and comma < bracket):
        return nodelist.split(",")[0]
    close = nodelist.index("]", bracket)
    first = nodelist[bracket + 1:close].split(",")[0].split("-")[0]
    suffix = nodelist[close + 1:].split(",")[0]
    return nodelist[:bracket] + first + suffix


def _rendezvous(environ, first_host: str, job_id: str) -> tuple[str, int]:
    addr = environ.get("MASTER_ADDR") or first_host
    port = int(environ["MASTER_PORT"]) if environ.get("MASTER_PORT") else _port_for_job(job_id)
    return addr, port


def detect(environ: dict | None = None) -> DistEnv:
    """The ranks of this process (see the module docstring for the order of sources)."""
    env = os.environ if environ is None else environ
    if env.get("SUBMITIT_EXECUTOR") and environ is None:
        import submitit

        job = submitit.JobEnvironment()
        if job.num_tasks > 1:
            addr, port = _rendezvous(env, job.hostnames[0], job.job_id)
            return DistEnv(job.global_rank, job.num_tasks, job.local_rank, addr, port, "submitit")
        return DistEnv()
    if env.get("SLURM_STEP_ID") is not None and env.get("SLURM_PROCID") is not None:
        world = int(env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or 1)
        if world > 1:
            nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or socket.gethostname()
            addr, port = _rendezvous(env, first_host(nodes), env.get("SLURM_JOB_ID", "0"))
            return DistEnv(int(env["SLURM_PROCID"]), world, int(env.get("SLURM_LOCALID", 0)), addr, port, "slurm")
        return DistEnv()
    if int(env.get("WORLD_SIZE", 1)) > 1 and env.get("RANK") is not None:
        addr, port = _rendezvous(env, "127.0.0.1", "torchrun")
        return DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)), addr, port, "torchrun")
    return DistEnv()


def init(env: DistEnv) -> None:
    """Start the process group for ``env`` (nothing to do for a single process)."""
    if not env.enabled:
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(env.local_rank % torch.cuda.device_count())
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, init_method=f"tcp://{env.master_addr}:{env.master_port}",
                            rank=env.rank, world_size=env.world_size, timeout=COLLECTIVE_TIMEOUT)
    log.info("data parallel: rank %d of %d (%s, %s, rendezvous %s:%d)", env.rank, env.world_size, env.source,
             backend, env.master_addr, env.master_port)


def barrier(env: DistEnv) -> None:
    if env.enabled:
        import torch.distributed as dist

        dist.barrier()


def shutdown(env: DistEnv) -> None:
    if env.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


class Shard:
    """This rank's share of the documents, handed to the model wrapper (``Runtime.shard``)."""

    def __init__(self, env: DistEnv):
        self.env = env

    def owns(self, task: str, doc_id: int) -> bool:
        return int(doc_id) % self.env.world_size == self.env.rank

    def exchange(self, answers: dict[tuple[str, int], str]) -> dict[tuple[str, int], str]:
        """All ranks' answers, merged (a collective: every rank calls it once per ``generate_until``)."""
        import torch.distributed as dist

        gathered: list = [None] * self.env.world_size
        dist.all_gather_object(gathered, answers)
        merged: dict[tuple[str, int], str] = {}
        for part in gathered:
            merged.update(part or {})
        return merged


@contextlib.contextmanager
def single_process_view():
    """Hide torchrun's rank variables while lmms-eval runs, so it does not shard the documents itself."""
    saved = {k: os.environ.pop(k) for k in _TORCHRUN_VARS if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


# -- sample files ------------------------------------------------------------------------------------

def rank_samples_path(run_dir: str | Path, rank: int) -> Path:
    return Path(run_dir) / f"samples.rank{rank}.jsonl"


def rank_sink(run_dir: str | Path, rank: int):
    """The per-sample sink of rank ``rank``: appends to ``samples.rank<k>.jsonl`` like ``RunStore``,
    each record stamped with the rank that generated it."""
    from seats_exp.store import RunStore

    store = RunStore(run_dir)
    store.samples_path = rank_samples_path(run_dir, rank)

    def sink(record: dict) -> None:
        store.append_sample({**record, "rank": rank})

    return sink


def sample_files(run_dir: str | Path) -> list[Path]:
    run_dir = Path(run_dir)
    ranks = sorted(run_dir.glob("samples.rank*.jsonl"), key=lambda p: int(p.name[len("samples.rank"):-len(".jsonl")]))
    return [run_dir / "samples.jsonl", *ranks]


def iter_run_samples(run_dir: str | Path) -> Iterator[dict]:
    """Every recorded sample of a run folder: ``samples.jsonl`` first, then the rank files."""
    for path in sample_files(run_dir):
        yield from iter_jsonl(path)


def merge_rank_samples(run_dir: str | Path) -> int:
    """Fold the rank files into ``samples.jsonl`` (atomic; last record of a sample wins); return its size."""
    from seats_exp.store import _default, atomic_write_text

    run_dir = Path(run_dir)
    files = sample_files(run_dir)
    records: dict[tuple[str, int], dict] = {}
    for r in iter_run_samples(run_dir):
        records[(str(r.get("task")), int(r.get("doc_id", -1)))] = r
    ordered = [records[k] for k in sorted(records)]
    atomic_write_text(run_dir / "samples.jsonl", "".join(json.dumps(r, default=_default) + "\n" for r in ordered))
    for path in files[1:]:
        path.unlink(missing_ok=True)
    return len(ordered)
