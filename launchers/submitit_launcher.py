"""hydra-submitit-launcher's launchers, with the two behaviours a long sweep needs
(``conf/hydra/launcher/slurm.yaml`` and ``local_submitit.yaml`` point ``_target_`` at them, as
``hydra_plugins.seats_exp_launchers.*``: Hydra takes launchers from that namespace only):

* **A failed point fails its job.**  The plugin's job function returns Hydra's ``JobReturn`` even when
  the point raised, so SLURM (and ``sacct``) report the job COMPLETED.  Here the job re-raises the
  point's exception: the job ends FAILED, its log holds the traceback.
* **The sweep waits for every job and then reports every failed point.**  The plugin collects results
  in order and stops at the first failed (or cancelled) job.  Here every job is awaited; a job that
  failed, was cancelled (``scancel``: seen through ``sacct``, so the cluster needs job accounting) or
  never produced a result becomes a FAILED ``JobReturn`` naming the point, and Hydra's sweeper then
  ends the sweep with an error after all points are settled.  A relaunch resumes the failed points
  from their recorded samples and skips the finished ones.

Everything else (executor parameters, job arrays, checkpoint/requeue on preemption) is the plugin's.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher import submitit_launcher as plugin
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


class PointFailed(RuntimeError):
    """A sweep point's job failed, was cancelled or produced no result."""


class _SeatsLauncher(plugin.BaseSubmititLauncher):
    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:  # runs inside the job
        ret = super().__call__(*args, **kwargs)
        if ret.status == JobStatus.FAILED:
            raise ret._return_value  # the point's own exception: the job fails with it
        return ret

    def _executor(self):
        import submitit

        params = dict(self.params)
        init = {"folder": params.pop("submitit_folder")}
        if "max_num_timeout" in params:
            init[f"{self._EXECUTOR}_max_num_timeout"] = params.pop("max_num_timeout")
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
        generic = set(OmegaConf.structured(plugin.BaseQueueConf).keys())
        executor.update_parameters(**{k if k in generic else f"{self._EXECUTOR}_{k}": v for k, v in params.items()})
        return executor

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and len(job_overrides) > 0
        executor = self._executor()
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")
        args = []
        for offset, overrides in enumerate(job_overrides):
            idx = initial_job_idx + offset
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            args.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        jobs = executor.map_array(self, *zip(*args))
        returns, failed = [], []
        for (overrides, *_), idx, job in zip(args, range(initial_job_idx, initial_job_idx + len(args)), jobs):
            try:
                returns.append(job.results()[0])
            except Exception as exc:  # failed in the point, cancelled, killed, or no result at all
                why = _reason(exc)
                log.error("point #%d (job %s) failed: %s", idx, job.job_id, why)
                ret = JobReturn(overrides=overrides, status=JobStatus.FAILED)
                ret._return_value = PointFailed(f"point #{idx} ({' '.join(filter_overrides(overrides))}): job "
                                                f"{job.job_id} failed: {why}; relaunch the sweep to resume it")
                returns.append(ret)
                failed.append(idx)
        if failed:
            log.error("%d of %d points failed (%s); every job has ended -- relaunch the same sweep to resume them",
                      len(failed), len(args), ", ".join(f"#{i}" for i in failed))
        return returns


def _reason(exc: Exception) -> str:
    """One line for a job that gave no result: the point's own error, or the state SLURM reports."""
    text = str(exc)
    marker = "-" * 22  # submitit frames the job's traceback with these
    if text.count(marker) >= 2:
        lines = [line for line in text.split(marker)[1].splitlines() if line.strip()]
        if lines:
            return lines[-1].strip()
    for line in text.splitlines():
        if "state:" in line:
            return "no result, " + line.strip()
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def register() -> None:
    """Register the launchers with Hydra (``hydra_plugins.seats_exp_launchers.*``); idempotent."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.seats_exp_launchers import LocalLauncher, SlurmLauncher

    for cls in (LocalLauncher, SlurmLauncher):
        Plugins.instance().register(cls)
