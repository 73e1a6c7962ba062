"""What every transfer method shares: the frozen-teacher contract and feature taps."""
