"""The project's submitit launchers (logic: ``launchers/submitit_launcher.py``), defined in the
``hydra_plugins`` namespace because Hydra instantiates launchers from there only.  Hydra's plugin scan
may not see namespace portions of an editable install, so ``seats-exp -m`` also registers them
explicitly (``launchers.submitit_launcher.register``) before the launcher is built."""

from launchers.submitit_launcher import _SeatsLauncher


class LocalLauncher(_SeatsLauncher):
    _EXECUTOR = "local"


class SlurmLauncher(_SeatsLauncher):
    _EXECUTOR = "slurm"
