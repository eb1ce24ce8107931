"""``seats-exp``: the Hydra entry point.

    seats-exp                                   # tiny model, synthetic set, full tokens
    seats-exp method=seats schedule=r10         # any group option
    seats-exp -m method=full_tokens,seats       # a multirun sweep
    seats-exp mode=plan model=qwen2_5_omni_7b method=seats schedule=r10 plan.json=true
    seats-exp mode=bench bench=cpu_scaled       # every method x R x length, timed (conf/bench/)
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from seats_exp.config import ConfigError, validate
from seats_exp.package import config_path

log = logging.getLogger("seats_exp")

# pkg://seats_exp.conf in an installed package, <repo>/conf in a source checkout (seats_exp/package.py).
CONFIG_PATH = config_path()


def _summary_table(result: dict) -> str:
    from seats_exp.report import format_table

    return format_table([result])


INTERRUPTED_NAME = "interrupted.json"


def _mark_interrupted(run_dir: Path, argv: list[str]) -> str:
    """Mark the run folder interrupted (its samples stay; there is no result.json) and say how to resume."""
    import json
    import shlex
    import time

    from launchers.resume import answered_samples

    n = answered_samples(run_dir) if run_dir.is_dir() else 0
    args = [a for a in argv if not a.startswith("hydra.run.dir=")]
    resume = shlex.join(["seats-exp", *args, f"hydra.run.dir={run_dir}"])
    if run_dir.is_dir():
        (run_dir / INTERRUPTED_NAME).write_text(json.dumps(
            {"interrupted_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "answered_samples": n, "resume": resume}, indent=1))
    return (f"interrupted: {n} answered sample(s) kept in {run_dir} (no result.json); "
            f"resume with: {resume}")


@hydra.main(config_path=CONFIG_PATH, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    try:
        rc = validate(cfg)
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        print(f"seats-exp: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    from methods import MethodConfigError

    if rc.mode == "plan":
        from seats_exp.plan import run_plan

        try:
            run_plan(rc)
        except MethodConfigError as exc:  # a budget only the described input decides (e.g. DyCoke's range)
            log.error("configuration error: %s", exc)
            print(f"seats-exp: configuration error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        return None
    if rc.mode == "bench":
        from seats_exp.bench import BenchConfigError, run_bench

        try:
            if cfg.get("bench") is None:
                raise BenchConfigError("mode=bench needs a preset: bench=cpu_scaled (CPU), bench=gpu_qwen2_5_omni_7b "
                                       "(GPU) or bench=tiny (conf/bench/)")
            run_bench(OmegaConf.to_container(cfg.bench, resolve=True), HydraConfig.get().runtime.output_dir)
        except BenchConfigError as exc:
            log.error("bench configuration error: %s", exc)
            print(f"seats-exp: bench configuration error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        return None
    from seats_exp import runner

    from evaluation.benchmarks import BenchmarkDataError
    from launchers.resume import RunFolderConflict
    from seats_exp.models.loading import ModelLoadError

    from hydra.types import RunMode

    run_dir = HydraConfig.get().runtime.output_dir
    try:
        result = runner.run(rc, run_dir, OmegaConf.to_yaml(cfg, resolve=True))
    except (ModelLoadError, BenchmarkDataError, RunFolderConflict, ConfigError, MethodConfigError) as exc:
        log.error("%s", exc)
        print(f"seats-exp: {exc}", file=sys.stderr)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # a sweep point: the launcher records the error for this point (and names it)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(f"seats-exp: {_mark_interrupted(Path(run_dir), sys.argv[1:])}", file=sys.stderr)
        raise SystemExit(130) from None
    print(_summary_table(result))
    print(f"output folder: {result['run_dir']}")
    return result.get("accuracy")


if __name__ == "__main__":
    main()
