"""Extension points in-process (fast): the method registry's entry points and name clashes, the
Hydra search-path plugin, where the config tree is taken from, and the git commit of result.json.
The same paths end to end, with built wheels in fresh environments: tests/test_install.py."""

from __future__ import annotations

import re
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

import methods
from methods import MethodConfigError, ModelInfo
from seats_exp import package
from seats_exp.selection import BaseSelector

REPO = Path(__file__).resolve().parent.parent
INFO = ModelInfo(variant="tiny_qwen2_5_omni", family="qwen2_5_omni", num_layers=8, audio_tokens_per_second=25.0)


@pytest.fixture()
def registry(monkeypatch):
    """A private copy of the registry (built-ins loaded), restored afterwards."""
    methods.available()
    monkeypatch.setattr(methods, "_REGISTRY", dict(methods._REGISTRY))
    monkeypatch.setattr(methods, "_ORIGIN", dict(methods._ORIGIN))
    monkeypatch.setattr(methods, "_entry_points_loaded", False)
    return monkeypatch


def _builder(module: str):
    def build(params, video_ratio, audio_ratio, model):
        return BaseSelector()

    build.__module__ = module
    return build


def _entry_points(monkeypatch, *eps: tuple[str, str]):
    found = [metadata.EntryPoint(name=n, value=v, group=package.METHODS_GROUP) for n, v in eps]
    monkeypatch.setattr(package, "entry_points", lambda group: found if group == package.METHODS_GROUP else [])


def test_a_builtin_name_is_refused(registry):
    with pytest.raises(MethodConfigError) as err:
        methods.register("seats")(_builder("their_pkg.selectors"))
    assert str(err.value) == ("method name 'seats' clashes with the built-in method 'seats' (methods.seats); "
                              "their_pkg.selectors must register its method under another name")
    assert methods._ORIGIN["seats"] == "methods.seats"


def test_two_packages_with_one_name_are_refused(registry):
    methods.register("shared_name")(_builder("pkg_a.sel"))
    with pytest.raises(MethodConfigError, match=r"^method name 'shared_name' is registered by both pkg_a.sel and "
                                                r"pkg_b.sel; rename one of them$"):
        methods.register("shared_name")(_builder("pkg_b.sel"))


def test_the_same_module_imported_again_replaces_itself(registry):
    first, second = _builder("pkg_a.sel"), _builder("pkg_a.sel")
    methods.register("again")(first)
    methods.register("again")(second)
    assert methods._REGISTRY["again"] is second


def test_an_entry_point_module_registers_its_method(registry, tmp_path):
    (tmp_path / "i16_ext_methods.py").write_text(
        "from methods import register\nfrom seats_exp.selection import BaseSelector\n\n"
        "class Mine(BaseSelector):\n    name = 'i16_mine'\n\n"
        "@register('i16_mine')\ndef build(params, video_ratio, audio_ratio, model):\n    return Mine()\n")
    registry.syspath_prepend(str(tmp_path))
    _entry_points(registry, ("mine", "i16_ext_methods"))
    assert "i16_mine" in methods.available()
    assert methods.build_selector("i16_mine", {}, 0.5, 0.5, INFO).name == "i16_mine"
    assert methods._ORIGIN["i16_mine"] == "i16_ext_methods"


def test_an_entry_point_that_cannot_be_imported_is_one_sentence(registry):
    _entry_points(registry, ("broken", "i16_no_such_module"))
    with pytest.raises(MethodConfigError) as err:
        methods.build_selector("seats", {}, 0.3, 0.65, INFO)
    assert str(err.value) == ("methods of entry point broken = i16_no_such_module in group seats_exp.methods could "
                              "not be imported: ModuleNotFoundError: No module named 'i16_no_such_module'")


def test_an_entry_point_that_clashes_names_its_package(registry, tmp_path):
    (tmp_path / "i16_clash.py").write_text(
        "from methods import register\nfrom seats_exp.selection import BaseSelector\n\n"
        "@register('random')\ndef build(params, video_ratio, audio_ratio, model):\n    return BaseSelector()\n")
    registry.syspath_prepend(str(tmp_path))
    _entry_points(registry, ("clash", "i16_clash"))
    with pytest.raises(MethodConfigError) as err:
        methods.available()
    assert str(err.value) == ("method name 'random' clashes with the built-in method 'random' (methods.random); "
                              "i16_clash must register its method under another name (from entry point clash = "
                              "i16_clash in group seats_exp.methods)")


def _search_path(primary: str, monkeypatch) -> list[tuple[str, str]]:
    from hydra._internal.utils import create_config_search_path

    monkeypatch.setattr(package, "extension_search_paths", lambda: [("seats_exp.searchpath:fake", "pkg://i16_fake")])
    return [(e.provider, e.path) for e in create_config_search_path(primary).get_path()]


def test_plugin_appends_package_configs_to_our_tree_only(monkeypatch, tmp_path):
    ours = _search_path(str(REPO / "conf"), monkeypatch)
    assert ours == [("hydra", "pkg://hydra.conf"), ("main", str(REPO / "conf")),
                    ("seats_exp.searchpath:fake", "pkg://i16_fake"), ("schema", "structured://")]
    assert ("seats_exp.searchpath:fake", "pkg://i16_fake") in _search_path(f"file://{REPO / 'conf'}", monkeypatch)
    assert ("seats_exp.searchpath:fake", "pkg://i16_fake") in _search_path("pkg://seats_exp.conf", monkeypatch)
    other = _search_path(str(tmp_path), monkeypatch)  # another Hydra application: left alone
    assert [p for _, p in other] == ["pkg://hydra.conf", str(tmp_path), "structured://"]


def test_extension_search_paths_come_from_entry_points(monkeypatch, capsys):
    eps = [metadata.EntryPoint(name="mine", value="omegaconf", group=package.SEARCHPATH_GROUP),
           metadata.EntryPoint(name="gone", value="i16_no_such_conf", group=package.SEARCHPATH_GROUP)]
    monkeypatch.setattr(package, "entry_points", lambda group: eps if group == package.SEARCHPATH_GROUP else [])
    assert package.extension_search_paths() == [("seats_exp.searchpath:mine", "pkg://omegaconf")]
    assert "entry point gone = i16_no_such_conf in group seats_exp.searchpath: no package 'i16_no_such_conf'" in (
        capsys.readouterr().err)


def test_the_config_tree_is_the_packaged_copy_when_there_is_one(monkeypatch, tmp_path):
    assert package.config_path() == str(REPO / "conf") and package.source_root() == REPO
    (tmp_path / "config.yaml").write_text("{}\n")
    monkeypatch.setattr(package, "_PACKAGED_CONF", tmp_path)
    assert package.config_path() == "pkg://seats_exp.conf"
    assert package.source_root() is None


def test_git_commit_says_when_there_is_no_checkout(monkeypatch, tmp_path):
    inside = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=REPO, capture_output=True, text=True)
    if inside.returncode == 0 and Path(inside.stdout.strip()).resolve() == REPO.resolve():
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", package.git_commit())
    monkeypatch.setattr(package, "source_root", lambda: tmp_path)  # a source tree outside git
    assert package.git_commit() == f"none: source tree {tmp_path} is not a git checkout"
    monkeypatch.setattr(package, "source_root", lambda: None)  # an installed package
    assert package.git_commit() == (f"none: installed package seats-exp {package.version()} ({package.PACKAGE_DIR}), "
                                    "not a git checkout")


def test_readme_example_package_is_the_tested_one():
    """The README's "Your own method in your own package" shows tests/example_method_pkg verbatim
    (its files are what tests/test_install.py builds, installs and runs)."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Your own method in your own package", 1)[1].split("\n## ", 1)[0]
    blocks = [body for lang, body in re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)
              if lang in ("toml", "yaml", "python")]
    assert len(blocks) == 3
    for body in blocks:
        rel = body.splitlines()[0].lstrip("# ").strip()
        assert (REPO / "tests" / "example_method_pkg" / rel).read_text() == body, rel
