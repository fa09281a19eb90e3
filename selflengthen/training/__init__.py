"""Training placement and durability: trainer checkpoints and resume (checkpoints.py), the
distributed strategies handed to TRL (strategy.py), and Ray Train for several workers per
adapter (ray_train.py). The SFT recipe itself is stages/train.py."""
