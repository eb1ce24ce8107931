"""Hydra search-path plugin of seats-exp: the config packages other packages declare.

A package that adds methods to seats-exp declares, next to its ``seats_exp.methods`` entry point,
an entry point in the group ``seats_exp.searchpath`` whose value is a Python package holding Hydra
config groups (e.g. ``my_pkg.conf`` with ``method/my_method.yaml``).  This plugin appends
``pkg://my_pkg.conf`` to the search path, after seats-exp's own tree (so a built-in config is never
shadowed) and before any ``hydra.searchpath`` given by the user.

Hydra loads every plugin for every application; this one changes nothing unless the primary config
is seats-exp's own.
"""

from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class SeatsExpSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        try:
            from seats_exp import package
        except ImportError:  # seats_exp not importable here: not our application
            return
        if not any(e.provider == "main" and package.is_primary_search_path(e.path) for e in search_path.get_path()):
            return
        for provider, path in package.extension_search_paths():
            search_path.append(provider=provider, path=path)
