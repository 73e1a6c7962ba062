"""The packaged Hydra configs: in an install this folder is the package tasks.conf (tasks/conf links here),
found through Hydra's package search path pkg://tasks.conf."""
