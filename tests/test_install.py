"""A built (non-editable) seats-exp installed as a user would, and a method from another package.

One sdist -> wheel build per module, from a copy of the repository (nothing is written into the
checkout); the copy's version gets the local label ``+installtest`` so the version recorded in
``result.json`` provably comes from the installed package's metadata.  Each environment is a fresh
virtual environment (``venv --without-pip``) that reuses the already-installed dependencies of the
running interpreter through a ``.pth`` listing its site-packages as plain paths (so their own
``.pth`` files, such as an editable seats-exp, are not processed); our wheels are installed with
``pip --no-deps``.  Every command runs from an empty folder with ``PYTHONPATH`` unset, and the test
checks that the modules really come from the fresh environment.

Environments: ``plain`` (seats-exp only), ``ext`` (+ the example package
``tests/example_method_pkg``, method ``stride``), ``clash`` (+ a generated package that registers
the built-in name ``random``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import IN_CI, require_tool

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"
EXAMPLE = REPO / "tests" / "example_method_pkg"
LABEL = "+installtest"
_SKIP = {".venv", ".git", "outputs", "data", "build", "dist", "multirun", "wandb", ".cache", ".pytest_cache",
         "__pycache__"}


def _ignore(_dir, names):
    return [n for n in names if n in _SKIP or n.endswith((".egg-info", ".pyc"))]


def _check(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _yaml_names(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*.yaml")}


class Env:
    """A fresh virtual environment with our wheels; runs commands from an empty folder."""

    def __init__(self, root: Path, wheels: list[Path]):
        self.root = root
        _check([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")])
        self.python = root / "venv" / "bin" / "python"
        self.site = Path(_check([str(self.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                env=self.env()).stdout.strip())
        shared = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
        (self.site / "_reuse_installed_dependencies.pth").write_text("".join(f"{p}\n" for p in shared))
        _check([str(self.python), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed",
                "--disable-pip-version-check", "-q", *map(str, wheels)], env=self.env(), cwd=root)
        self.cwd = root / "work"
        self.cwd.mkdir()

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV") and not k.startswith(("WANDB_", "HYDRA_"))}
        home = self.root / "home"
        home.mkdir(exist_ok=True)
        env.update(HOME=str(home), PYTHONNOUSERSITE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                   WANDB_SILENT="true")
        return env

    def run(self, *args: str, tool: str = "seats-exp", timeout: float = 420) -> subprocess.CompletedProcess:
        exe = self.root / "venv" / "bin" / tool
        return subprocess.run([str(exe), *args], cwd=self.cwd, env=self.env(), capture_output=True, text=True,
                              timeout=timeout)


def _wheel(src: Path, out: Path) -> Path:
    """``pip wheel`` of one project (no isolation: setuptools comes from the running environment)."""
    _check([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
            "--disable-pip-version-check", "-q", "-w", str(out), str(src)])
    (wheel,) = out.glob("*.whl")
    return wheel


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    try:  # the builds run without isolation: setuptools must be in this environment (the test extra)
        import setuptools  # noqa: F401
    except ImportError:
        if IN_CI:
            pytest.fail("setuptools is required under CI=true (pip install -e '.[test]')")
        pytest.skip("setuptools not installed")
    tmp = tmp_path_factory.mktemp("install")
    # A copy of the checkout, version labelled, built as an sdist, then a wheel from the unpacked
    # sdist (what `python -m build` does; `pip install .` builds the wheel from the tree directly).
    src = tmp / "seats-exp-src"
    shutil.copytree(REPO, src, ignore=_ignore)
    pyproject = src / "pyproject.toml"
    text = pyproject.read_text()
    base = re.search(r'^version = "([^"]+)"', text, flags=re.M).group(1)
    pyproject.write_text(text.replace(f'version = "{base}"', f'version = "{base}{LABEL}"', 1))
    sdists = tmp / "sdist"
    name = _check([sys.executable, "-c", f"from setuptools import build_meta; print(build_meta.build_sdist({str(sdists)!r}))"],
                  cwd=src).stdout.strip().splitlines()[-1]
    sdist = sdists / name
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp / "unpacked", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    (unpacked,) = (tmp / "unpacked").iterdir()
    wheels = tmp / "wheels"
    seats_wheel = _wheel(unpacked, wheels / "seats")

    example = tmp / "example_method_pkg"
    shutil.copytree(EXAMPLE, example, ignore=_ignore)
    example_wheel = _wheel(example, wheels / "example")

    clash = tmp / "clash_pkg"
    (clash / "seats_clash").mkdir(parents=True)
    (clash / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "seats-exp-clash"\nversion = "0.0.1"\n\n'
        '[project.entry-points."seats_exp.methods"]\nmy_random = "seats_clash.selector"\n\n'
        '[tool.setuptools]\npackages = ["seats_clash"]\n')
    (clash / "seats_clash" / "__init__.py").write_text("")
    (clash / "seats_clash" / "selector.py").write_text(
        "from methods import register\nfrom seats_exp.selection import BaseSelector\n\n\n"
        "@register('random')  # the name of a built-in method\n"
        "def build(params, video_ratio, audio_ratio, model):\n    return BaseSelector()\n")
    clash_wheel = _wheel(clash, wheels / "clash")
    return {"tmp": tmp, "version": base + LABEL, "sdist": sdist, "seats": seats_wheel, "example": example_wheel,
            "clash": clash_wheel}


@pytest.fixture(scope="module")
def plain(built) -> Env:
    # Inside a git repository of its own (as a project's .venv often is): result.json must not
    # report that repository's commit as seats-exp's.
    root = built["tmp"] / "env_plain"
    git = require_tool("git")
    _check([git, "init", "-q", str(root)])
    _check([git, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "--allow-empty", "-m", "x"],
           cwd=root)
    return Env(root, [built["seats"]])


@pytest.fixture(scope="module")
def ext(built) -> Env:
    return Env(built["tmp"] / "env_ext", [built["seats"], built["example"]])


def _groups(help_text: str, section: str = "== Configuration groups ==") -> dict[str, set[str]]:
    lines = help_text.split(section, 1)[1].split("\n\n", 2)[1].splitlines()
    return {k.strip(): {o.strip() for o in v.split(",")} for k, v in (line.split(":", 1) for line in lines)}


def _conf_groups(root: Path) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for path in root.rglob("*.yaml"):
        group = path.parent.relative_to(root).as_posix()
        if group != ".":
            out.setdefault(group, set()).add(path.stem)
    return out


def _output_folder(stdout: str) -> Path:
    (found,) = re.findall(r"^output folder: (.+)$", stdout, flags=re.M)
    return Path(found.strip())


# ------------------------------------------------------------------------------------------------
# The built package
# ------------------------------------------------------------------------------------------------


def test_sdist_and_wheel_carry_the_config_tree(built):
    with tarfile.open(built["sdist"]) as tar:
        in_sdist = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {f"conf/{n}" for n in _yaml_names(CONF)} <= in_sdist
    with zipfile.ZipFile(built["seats"]) as whl:
        names = set(whl.namelist())
        packaged = {n[len("seats_exp/conf/"):] for n in names if n.startswith("seats_exp/conf/") and n.endswith(".yaml")}
        assert packaged == _yaml_names(CONF)
        for rel in sorted(packaged):  # byte-identical copies of conf/
            assert whl.read(f"seats_exp/conf/{rel}") == (CONF / rel).read_bytes(), rel
        assert "hydra_plugins/seats_exp_searchpath/seats_exp_searchpath.py" in names
        assert "evaluation/tasks/dailyomni/utils.py" in names
        assert not [n for n in names if n.startswith(("conf/", "tests/"))]


def test_installed_copy_is_the_one_imported(plain):
    code = ("import seats_exp, methods, evaluation, launchers, hydra_plugins.seats_exp_searchpath as p, torch\n"
            "from seats_exp import package\n"
            "print(seats_exp.__file__, methods.__file__, evaluation.__file__, launchers.__file__, p.__file__)\n"
            "print(package.config_path(), package.version())\nprint(torch.__file__)\n")
    proc = plain.run("-c", code, tool="python")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours, config, deps = proc.stdout.splitlines()
    for path in ours.split():
        assert Path(path).is_relative_to(plain.site), path
    assert config.split() == ["pkg://seats_exp.conf", plain_version(plain)]
    assert not Path(deps).is_relative_to(plain.site)  # torch comes from the reused environment


def plain_version(env: Env) -> str:
    (dist,) = env.site.glob("seats_exp-*.dist-info")
    return dist.name[len("seats_exp-"):-len(".dist-info")]


def test_help_lists_every_group(plain, built):
    proc = plain.run("--help")
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = {g: o for g, o in _conf_groups(CONF).items() if not g.startswith("hydra/")}
    assert _groups(proc.stdout) == expected
    proc = plain.run("--hydra-help")
    assert proc.returncode == 0, proc.stderr[-3000:]
    listed = _groups(proc.stdout)
    for group, options in _conf_groups(CONF).items():
        if group.startswith("hydra/"):
            assert options <= listed[group], group
    assert plain_version(plain) == built["version"]


def test_plan_mode_prints_what_the_source_tree_prints(plain):
    args = ["mode=plan", "model=qwen2_5_omni_7b", "method=seats", "schedule=r10", "plan.json=true"]
    proc = plain.run(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    installed = json.loads(proc.stdout)
    env = plain.env() | {"PYTHONPATH": str(REPO)}
    reference = subprocess.run([sys.executable, "-m", "seats_exp.cli", *args], cwd=plain.cwd, env=env,
                               capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr[-3000:]
    assert installed == json.loads(reference.stdout)
    assert installed["flops_ratio"] > 1


def test_tiny_run_from_an_empty_folder(plain, built):
    proc = plain.run("method=random", "benchmark.tasks.synthetic.synthetic.num_clips=2",
                     "benchmark.tasks.synthetic.generation.max_new_tokens=4", "eval.progress=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = _output_folder(proc.stdout)
    assert run_dir.is_relative_to(plain.cwd / "outputs" / "runs")
    result = json.loads((run_dir / "result.json").read_text())
    assert (result["method"], result["n_samples"], result["n_errors"]) == ("random", 2, 0)
    assert result["versions"]["seats-exp"] == built["version"]
    assert result["git_commit"].startswith("none: installed package seats-exp"), result["git_commit"]
    assert str(plain.site) in result["git_commit"]
    assert (plain.cwd / "data" / "models" / "tiny_qwen2_5_omni" / "model.safetensors").is_file()


def test_site_configs_with_the_installed_package(plain, tmp_path):
    site = tmp_path / "site"
    shutil.copytree(REPO / "examples" / "site", site)
    proc = plain.run(f"hydra.searchpath=[file://{site}]", "experiment=mycluster_7b",
                     "+paper_cell/qwen2_5_omni_7b=seats_r10", "benchmark=dailyomni", tool="seats-exp-sweep-list")
    assert proc.stdout.splitlines()[0] == ("experiment paper_qwen2_5_omni_7b: 1 points, launcher mycluster, "
                                           "folder /scratch/seats-exp/outputs/experiments/paper_qwen2_5_omni_7b"), (
        proc.stdout[-2000:] + proc.stderr[-2000:])


# ------------------------------------------------------------------------------------------------
# A method from another package
# ------------------------------------------------------------------------------------------------


def test_method_package_is_listed_and_found(ext):
    proc = ext.run("--help")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _groups(proc.stdout)["method"] == _conf_groups(CONF)["method"] | {"stride"}
    proc = ext.run("--info", "searchpath")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in proc.stdout.splitlines() if line.startswith("|")]
    paths = [r[1] for r in rows[1:]]
    assert paths == ["pkg://hydra.conf", "pkg://seats_exp.conf", "pkg://seats_stride.conf", "structured://"]
    assert rows[3][0] == "seats_exp.searchpath:seats_stride"


def test_method_package_bad_setting_is_one_clear_line(ext):
    proc = ext.run("mode=plan", "method=stride", "method.modalities=[video,text]")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "seats-exp: configuration error: method.modalities=['video', 'text']: give a non-empty list of "
        "['audio', 'video']")


def test_method_package_runs_end_to_end(ext):
    proc = ext.run("method=stride", "benchmark.tasks.synthetic.synthetic.num_clips=2",
                   "benchmark.tasks.synthetic.generation.max_new_tokens=4", "eval.progress=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = _output_folder(proc.stdout)
    result = json.loads((run_dir / "result.json").read_text())
    assert (result["method"], result["n_samples"], result["n_errors"]) == ("stride", 2, 0)
    assert result["method_settings"] == {"name": "stride", "ratios": {"video": 0.30, "audio": 0.65}}
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2
    for s in samples:
        assert s["drop_events"] == [[0, s["llm_input_tokens"], "stride"]]
        assert s["llm_input_tokens"] < s["input_tokens"]
    assert result["cost"]["flops_ratio"] > 1


def test_method_package_passes_the_every_method_matrix(ext):
    """tests/test_method_matrix.py, in the ``ext`` environment (the repository is not put on the
    path: ``-o pythonpath=``), restricted to ``stride``: 2 families x 2 attentions x 2 KV scopes."""
    cmd = [str(ext.python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "pythonpath=", "--rootdir",
           str(REPO), str(REPO / "tests" / "test_method_matrix.py"), "-k", "stride", "-W", "ignore"]
    proc = subprocess.run(cmd, cwd=ext.cwd, env=ext.env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert re.search(r"^8 passed", proc.stdout.strip().splitlines()[-1]), proc.stdout[-2000:]


def test_clash_with_a_builtin_name_is_refused(built):
    env = Env(built["tmp"] / "env_clash", [built["seats"], built["clash"]])
    for args in (["mode=plan"], ["mode=plan", "method=seats"]):
        proc = env.run(*args)
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines()[-1] == (
            "seats-exp: configuration error: method name 'random' clashes with the built-in method 'random' "
            "(methods.random); seats_clash.selector must register its method under another name (from package "
            "seats-exp-clash 0.0.1, entry point my_random = seats_clash.selector in group seats_exp.methods)")
