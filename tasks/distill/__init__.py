"""What every transfer method shares: one teacher-source grammar and loader (teacher_source.py),
the frozen-teacher contract (frozen.py), feature taps (taps.py) and the generic distillation
losses: KD on logits, hint, AT, RKD, dense (losses.py)."""
