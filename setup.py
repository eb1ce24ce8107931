"""Build hook: ship the top-level ``conf/`` tree inside the package as ``seats_exp/conf``.

Everything else is declared in pyproject.toml.  The sources stay in ``conf/``; a built package
(wheel, sdist -> wheel, ``pip install .``) gets a copy that ``seats_exp.package`` finds through
Hydra's ``pkg://seats_exp.conf``.  An editable install copies nothing: it reads ``conf/`` itself.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONF_SOURCE = Path(__file__).resolve().parent / "conf"
CONF_TARGET = ("seats_exp", "conf")


class build_py_with_conf(build_py):
    def _conf_files(self) -> list[tuple[Path, Path]]:
        target = Path(self.build_lib, *CONF_TARGET)
        if not (CONF_SOURCE / "config.yaml").is_file():
            raise FileNotFoundError(f"{CONF_SOURCE}/config.yaml is missing: the config tree must be in the build")
        return [(src, target / src.relative_to(CONF_SOURCE)) for src in sorted(CONF_SOURCE.rglob("*.yaml"))]

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        target = Path(self.build_lib, *CONF_TARGET)
        for src, dst in self._conf_files():
            self.mkpath(str(dst.parent))
            self.copy_file(str(src), str(dst))
        (target / "__init__.py").write_text('"""seats-exp\'s Hydra config tree (copied from conf/ at build time)."""\n')

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if not self.editable_mode:
            outputs += [str(dst) for _, dst in self._conf_files()]
            outputs.append(str(Path(self.build_lib, *CONF_TARGET, "__init__.py")))
        return outputs


setup(cmdclass={"build_py": build_py_with_conf})
