"""Where seats-exp finds its own files, in a source checkout and in an installed package.

* The Hydra config tree lives in the top-level ``conf/`` of the repository.  A built package
  (wheel, ``pip install .``) carries a copy as package data, ``seats_exp/conf`` (``setup.py`` puts
  it there at build time), found through Hydra's ``pkg://seats_exp.conf``.  A source checkout
  (editable install, or ``PYTHONPATH`` pointing at the repository) has no such copy and uses
  ``conf/`` itself, so an edit there is seen at once.
* Other packages add methods through two entry-point groups: ``seats_exp.methods`` (a module that
  registers its methods with ``methods.register``, imported by the registry) and
  ``seats_exp.searchpath`` (a package holding Hydra config groups such as ``method/<name>.yaml``,
  appended to the search path by ``hydra_plugins/seats_exp_searchpath``).
"""

from __future__ import annotations

import importlib.util
import subprocess
from importlib import metadata
from pathlib import Path

DIST_NAME = "seats-exp"
CONF_MODULE = "seats_exp.conf"
METHODS_GROUP = "seats_exp.methods"
SEARCHPATH_GROUP = "seats_exp.searchpath"

PACKAGE_DIR = Path(__file__).resolve().parent
_PACKAGED_CONF = PACKAGE_DIR / "conf"
_SOURCE_ROOT = PACKAGE_DIR.parent
_SOURCE_CONF = _SOURCE_ROOT / "conf"


def packaged_conf() -> bool:
    """True when this copy of seats_exp carries its config tree (a built, non-editable install)."""
    return (_PACKAGED_CONF / "config.yaml").is_file()


def source_root() -> Path | None:
    """The repository folder when this copy of seats_exp runs from a source checkout, else None."""
    if packaged_conf():
        return None
    if (_SOURCE_CONF / "config.yaml").is_file() and (_SOURCE_ROOT / "pyproject.toml").is_file():
        return _SOURCE_ROOT
    return None


def config_path() -> str:
    """The primary config location for ``hydra.main``: ``pkg://seats_exp.conf`` or ``<repo>/conf``."""
    if packaged_conf():
        return f"pkg://{CONF_MODULE}"
    if (_SOURCE_CONF / "config.yaml").is_file():
        return str(_SOURCE_CONF)
    raise RuntimeError(f"seats-exp: no config tree: neither {_PACKAGED_CONF} (installed package) nor "
                       f"{_SOURCE_CONF} (source checkout) holds config.yaml; reinstall seats-exp")


def initialize_hydra(job_name: str):
    """Hydra's compose-API context for the primary config (what ``seats-exp`` itself composes)."""
    from hydra import initialize_config_dir, initialize_config_module

    path = config_path()
    if path.startswith("pkg://"):
        return initialize_config_module(config_module=CONF_MODULE, version_base="1.3", job_name=job_name)
    return initialize_config_dir(config_dir=path, version_base="1.3", job_name=job_name)


def is_primary_search_path(path: str) -> bool:
    """Whether a Hydra search-path entry (``pkg://…``, ``file://…`` or a bare folder) is our config tree."""
    if path == f"pkg://{CONF_MODULE}":
        return True
    if path.startswith("pkg://"):
        return False
    folder = path[len("file://"):] if path.startswith("file://") else path
    try:
        return Path(folder).resolve() in (_SOURCE_CONF.resolve(), _PACKAGED_CONF.resolve())
    except OSError:
        return False


def load_group_option(group: str, name: str):
    """``<group>/<name>.yaml`` as seats-exp's config search path finds it (its own tree first, then
    the packages of ``seats_exp.searchpath``): Hydra's ``ConfigResult`` (``.provider``, ``.path``,
    ``.config``), or None when no source holds it."""
    from hydra._internal.config_repository import ConfigRepository
    from hydra._internal.utils import create_config_search_path

    return ConfigRepository(create_config_search_path(config_path())).load_config(f"{group}/{name}")


def version() -> str:
    try:
        return metadata.version(DIST_NAME)
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def git_commit() -> str:
    """The commit of the source checkout (``-dirty`` with uncommitted changes to tracked files), or a
    sentence saying there is none (an installed package, or a source tree outside git)."""
    root = source_root()
    if root is None:
        return f"none: installed package seats-exp {version()} ({PACKAGE_DIR}), not a git checkout"
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True,
                             timeout=5)
        # A source tree inside someone else's repository must not report that repository's commit.
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != root.resolve():
            return f"none: source tree {root} is not a git checkout"
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return f"none: git rev-parse HEAD failed in {root}: {sha.stderr.strip()}"
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"none: git not usable in {root} ({exc})"


def entry_points(group: str) -> list[metadata.EntryPoint]:
    """Installed entry points of ``group``, one per (name, value), in a stable order."""
    seen: dict[tuple[str, str], metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=group):
        seen.setdefault((ep.name, ep.value), ep)
    return sorted(seen.values(), key=lambda ep: (ep.name, ep.value))


def describe_entry_point(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    package = f"package {dist.name} {dist.version}, " if dist is not None else ""
    return f"{package}entry point {ep.name} = {ep.value} in group {ep.group}"


def extension_search_paths() -> list[tuple[str, str]]:
    """(provider, ``pkg://…``) for every ``seats_exp.searchpath`` entry point whose package exists;
    a missing package is reported on stderr (its configs then cannot be found)."""
    import sys

    out = []
    for ep in entry_points(SEARCHPATH_GROUP):
        module = ep.value.split(":", 1)[0].strip()
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            print(f"seats-exp: warning: {describe_entry_point(ep)}: no package {module!r}; "
                  "its configs are not on the search path", file=sys.stderr)
            continue
        out.append((f"{SEARCHPATH_GROUP}:{ep.name}", f"pkg://{module}"))
    return out
