"""``seats-exp``: the Hydra entry point.

    seats-exp                                   # tiny model, synthetic set, full tokens
    seats-exp method=seats schedule=r10         # any group option
    seats-exp -m method=full_tokens,seats       # a multirun sweep
    seats-exp mode=plan model=qwen2_5_omni_7b method=seats schedule=r10 plan.json=true
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from seats_exp.config import ConfigError, validate

log = logging.getLogger("seats_exp")

# conf/ sits next to the package (installed in editable/development mode, see README).
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def _summary_table(result: dict) -> str:
    from seats_exp.report import format_table

    return format_table([result])


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")
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
    from seats_exp import runner

    from evaluation.benchmarks import BenchmarkDataError
    from seats_exp.models.loading import ModelLoadError

    run_dir = HydraConfig.get().runtime.output_dir
    try:
        result = runner.run(rc, run_dir, OmegaConf.to_yaml(cfg, resolve=True))
    except (ModelLoadError, BenchmarkDataError, MethodConfigError) as exc:
        log.error("%s", exc)
        print(f"seats-exp: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(_summary_table(result))
    print(f"output folder: {result['run_dir']}")
    return result.get("accuracy")


if __name__ == "__main__":
    main()
