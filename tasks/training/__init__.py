"""What every training run uses: callbacks, checkpoint writing, loggers, optimisers and
schedules, the weight EMA, per-step seeding, evaluation collectors and plots."""
