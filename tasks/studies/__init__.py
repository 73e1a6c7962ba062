"""Multi-stage chains (local and on SLURM), the study harness (CIs, paired differences) and kt-report."""
