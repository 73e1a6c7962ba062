"""What every transfer method shares: the frozen-teacher contract (frozen.py), feature taps
(taps.py) and the generic distillation losses: KD on logits, hint, AT, RKD, dense (losses.py)."""
