"""Training: one launcher (ray_train.py: a Ray task or a Ray Train run per adapter, the
trainer registry and its protocol), what every trainer shares around TRL (harness.py: setup,
checkpoints and resume through checkpoints.py, callbacks, the save), the distributed
strategies handed to TRL (strategy.py), and the trainers: SFT of both adapters (sft.py) and
DPO on scored samples (dpo.py; dpo_pairs.py builds the preference pairs)."""
