"""OmegaConf resolvers that conf/ relies on; importing `tasks` registers them."""

import os

from omegaconf import OmegaConf

# `${pid:}` makes run dirs unique even for jobs started in the same microsecond.
if not OmegaConf.has_resolver("pid"):
    OmegaConf.register_new_resolver("pid", lambda: str(os.getpid()), use_cache=True)
