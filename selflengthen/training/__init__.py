"""Training: the SFT recipe of both adapters (sft.py), trainer checkpoints and resume
(checkpoints.py), the distributed strategies handed to TRL (strategy.py), Ray Train for
several workers per adapter (ray_train.py), and DPO on scored samples (dpo_pairs.py builds
the preference pairs, dpo.py trains)."""
