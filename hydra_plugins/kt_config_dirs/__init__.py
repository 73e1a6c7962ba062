"""kt-framework's Hydra search path plugin: the config folders named in KT_CONFIG_DIR join every
composition in this environment (train, eval, the method stages, sweeps, Lightning's DDP
children), after the packaged configs, so a user's experiments, models and data compose with ours."""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

from tasks.config.location import USER_CONFIG_ENV, env_config_dirs


class UserConfigDirs(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for folder in env_config_dirs():
            search_path.append(provider=USER_CONFIG_ENV, path=f"file://{folder}")
