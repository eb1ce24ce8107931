"""``seats-exp-sweep-list``: the points a sweep would launch, without launching anything.

    seats-exp-sweep-list experiment=paper_qwen2_5_omni_7b
    seats-exp-sweep-list experiment=paper_qwen2_5_omni_7b method=seats paths.output_root=/scratch/out

Takes the same arguments as ``seats-exp -m`` and expands them exactly as a multirun does: the
experiment's ``hydra.sweeper.params`` first, then the command-line overrides (which win per key),
parsed by Hydra's override parser and crossed by the ``BasicSweeper``'s own ``split_arguments``.
Each point's configuration is then composed the way the launcher composes it, so the folder shown is
the one the point will write, and its state is read from that folder (``launchers.resume``):
``new``, ``partial (n samples)``, ``done`` (a relaunch skips it) or ``conflict`` (the folder holds
another configuration).  Nothing is written: no sweep folder, no ``multirun.yaml``.  Exit status 2
for a bad override or an invalid point (a configuration error, or two points sharing a folder), 1
when a point is in conflict with its folder (listed at the end, with the differing keys), else 0.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from hydra.experimental.callback import Callback


@dataclass
class Point:
    index: int
    overrides: list[str]  # this point's task overrides (the sweep's and the command line's)
    swept: list[str]      # only the overrides of keys the sweep varies
    run_name: str | None = None  # None: not composed (expand(..., compose=False))
    folder: Path | None = None
    state: str = "?"
    problem: str | None = None  # a configuration error found before launching
    differing: list[str] | None = None  # state conflict: the keys where the folder's configuration differs


def _split(args: list[str]) -> tuple[list[str], list[str]]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(args)
    hydra_args = [a for a, o in zip(args, parsed) if o.is_hydra_override()]
    task_args = [a for a, o in zip(args, parsed) if not o.is_hydra_override()]
    return hydra_args, task_args


def expand(args: list[str], *, compose_points: bool = True) -> tuple[dict, list[Point]]:
    """Compose ``args`` like ``seats-exp -m args``; return (sweep info, the points in launch order).

    ``compose_points=False`` only crosses the overrides (no run name, folder or state; Hydra takes a
    few hundred milliseconds to compose each point)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode
    from omegaconf import open_dict

    from seats_exp.package import initialize_hydra

    hydra_args, task_args = _split(args)
    with initialize_hydra(job_name="cli"):
        # composed as `-m` composes it (sweep values allowed on the command line)
        master = GlobalHydra.instance().hydra.compose_config(
            config_name="config", overrides=hydra_args + task_args, run_mode=RunMode.MULTIRUN,
            with_log_configuration=False)
        with open_dict(master.hydra):
            master.hydra.overrides.hydra = hydra_args  # what load_sweep_config replays before each point
        return expand_master(master, task_args, compose_points=compose_points)


def expand_master(master, task_args: list[str], *, compose_points: bool = True,
                  inspect: bool = True) -> tuple[dict, list[Point]]:
    """:func:`expand` from a composed multirun configuration (Hydra already initialised, as inside
    ``seats-exp -m``): cross the sweep and compose each point; the global HydraConfig is restored.
    ``inspect=False`` only finds each point's folder (no validation, no folder state)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf, open_dict

    from launchers.resume import folder_state, with_data_identity
    from seats_exp.config import ConfigError, validate

    loader = GlobalHydra.instance().config_loader()
    params = [f"{k}={v}" for k, v in (master.hydra.sweeper.params or {}).items()]
    parser = OverridesParser.create(config_loader=loader)
    parsed = parser.parse_overrides(params + list(task_args))
    swept_keys = {o.get_key_element() for o in parsed if o.is_sweep_override()}
    (batch,) = BasicSweeper.split_arguments(parsed, None)

    points: list[Point] = []
    sweep_dir = None
    previous = HydraConfig.instance().cfg
    try:
        for idx, overrides in enumerate(batch):
            swept = [o for o in overrides if o.split("=", 1)[0] in swept_keys]
            if not compose_points:
                points.append(Point(idx, list(overrides), swept))
                continue
            cfg = loader.load_sweep_config(master, list(overrides))
            with open_dict(cfg.hydra.job):
                cfg.hydra.job.num = idx
            HydraConfig.instance().set_config(cfg)
            sweep_dir = Path(cfg.hydra.sweep.dir) if sweep_dir is None else sweep_dir
            folder = Path(cfg.hydra.sweep.dir) / str(cfg.hydra.sweep.subdir)
            if not inspect:
                points.append(Point(idx, list(overrides), swept, str(cfg.run_name), folder))
                continue
            task_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
            problem = None
            point_yaml = OmegaConf.to_yaml(task_cfg, resolve=True)
            try:
                point_yaml = with_data_identity(point_yaml, validate(task_cfg, check_data=False))
            except ConfigError as exc:
                problem = str(exc)
            fs = folder_state(folder, point_yaml)
            state = {"partial": f"partial ({fs.n_samples} samples)",
                     "conflict": f"conflict ({', '.join(fs.differing[:3])})"}.get(fs.state, fs.state)
            points.append(Point(idx, list(overrides), swept, str(cfg.run_name), folder, state, problem,
                                fs.differing if fs.state == "conflict" else None))
    finally:
        if previous is not None:
            HydraConfig.instance().cfg = previous
    for group in shared_folders(points):
        keys = ", ".join(differing_overrides(group)) or "nothing swept"
        for p in group[1:]:  # e.g. a swept knob that run_name does not name
            p.problem = (f"same folder as point #{group[0].index} (they differ in {keys}, which the folder name "
                         "does not carry): name the key in run_name or hydra.sweep.subdir")
    info = {
        "experiment": OmegaConf.select(master, "experiment_name", default=None),
        "launcher": master.hydra.runtime.choices.get("hydra/launcher"),
        "sweep_dir": sweep_dir,
    }
    return info, points


def shared_folders(points: list[Point]) -> list[list[Point]]:
    """Groups of two or more points that would write the same folder."""
    by_folder: dict[Path, list[Point]] = {}
    for p in points:
        if p.folder is not None:
            by_folder.setdefault(p.folder, []).append(p)
    return [group for group in by_folder.values() if len(group) > 1]


def differing_overrides(group: list[Point]) -> list[str]:
    """The swept keys whose values differ between the points of ``group``."""
    values = [dict(o.split("=", 1) for o in p.swept) for p in group]
    keys = sorted({k for v in values for k in v})
    return [k for k in keys if len({v.get(k) for v in values}) > 1]


class RefuseSharedFolders(Callback):
    """Hydra callback (conf/config.yaml ``hydra.callbacks``): before ``seats-exp -m`` launches anything,
    refuse a sweep in which two points would write the same folder (their samples would mix and one
    result.json would overwrite the other).  One line naming the folder and the colliding keys; exit 2.
    It also registers the project's submitit launchers with Hydra (``launchers/submitit_launcher.py``)."""

    def on_multirun_start(self, config, **kwargs) -> None:
        from omegaconf import OmegaConf

        from launchers.submitit_launcher import register

        register()  # the project's submitit launchers, before Hydra builds the launcher

        task_args = list(OmegaConf.select(config, "hydra.overrides.task", default=[]) or [])
        _, points = expand_master(config, task_args, inspect=False)
        groups = shared_folders(points)
        if not groups:
            return
        lines = []
        for group in groups:
            keys = ", ".join(differing_overrides(group)) or "nothing swept"
            ids = ", ".join(f"#{p.index}" for p in group)
            first = (differing_overrides(group) or ["<key>"])[0]
            example = "'${run_name}." + first.split(".")[-1] + "_${" + first + "}'"
            lines.append(f"seats-exp: refusing to launch the sweep: points {ids} would share the folder {group[0].folder} "
                         f"(they differ in {keys}, which the folder name does not carry); name the key in run_name or "
                         f"hydra.sweep.subdir (e.g. hydra.sweep.subdir={example})")
        print("\n".join(lines), file=sys.stderr)
        raise SystemExit(2)


def format_points(info: dict, points: list[Point]) -> str:
    width = max((len(p.state) for p in points), default=4)
    header = (f"experiment {info['experiment'] or '-'}: {len(points)} points, launcher {info['launcher']}, "
              f"folder {info['sweep_dir']}")
    lines = [header]
    for p in points:
        if p.folder is None:
            where = "-"
        elif info["sweep_dir"] and p.folder.parent == info["sweep_dir"]:
            where = p.folder.name
        else:
            where = str(p.folder)
        line = f"#{p.index:<4d} {p.state:<{width}}  {where}  {' '.join(p.swept)}"
        if p.problem:
            line += f"  INVALID: {p.problem}"
        lines.append(line.rstrip())
    done = sum(p.state == "done" for p in points)
    conflicts = [p for p in points if p.differing is not None]
    invalid = sum(p.problem is not None for p in points)
    lines.append(f"{done} done, {len(points) - done - len(conflicts)} to run, {len(conflicts)} in conflict"
                 + (f", {invalid} invalid" if invalid else ""))
    if conflicts:
        lines.append("conflicts: these folders hold samples or a result of another configuration; a launch refuses "
                     "these points (point the sweep elsewhere or delete the folder):")
        for p in conflicts:
            lines.append(f"  #{p.index} {p.folder}: differs at {', '.join(p.differing)}")
    return "\n".join(lines)


def _one_line(exc: BaseException) -> str:
    """Hydra's message without its provider listing and documentation links."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    keep = [ln for ln in lines if not ln.startswith(("provider=", "See https://", "Config search path"))]
    text = " ".join(keep) or type(exc).__name__
    return text.replace("Available options: ", "available options: ")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return 0
    args = [a for a in args if a not in ("-m", "--multirun")]
    from hydra.errors import HydraException

    try:
        info, points = expand(args)
    except HydraException as exc:  # a bad override: unknown key or option, unparsable value
        print(f"seats-exp-sweep-list: bad override: {_one_line(exc)}", file=sys.stderr)
        return 2
    print(format_points(info, points))
    if any(p.problem for p in points):
        return 2  # an invalid point (a configuration error, two points sharing a folder) is bad input
    return 1 if any(p.differing is not None for p in points) else 0  # a point in conflict with its folder


if __name__ == "__main__":
    raise SystemExit(main())
