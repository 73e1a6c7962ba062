"""Knowledge Factorization ("Factorizing Knowledge in Neural Networks", ECCV 2022): factor
networks (a shared CKN plus one TSN per task) trained from a frozen teacher with the
InfoMax-Bottleneck losses, assembled into multi-task networks without fine-tuning, and
evaluated for per-task accuracy, leakage, disentanglement and transfer."""
