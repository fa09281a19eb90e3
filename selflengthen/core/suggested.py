"""The shell commands our messages tell a user to run, in one place, so that a test can
check each of them exists, with that subcommand, in the versions the project installs
(huggingface_hub 1.0 replaced `huggingface-cli` with `hf`, and a message naming the old
one sends a user nowhere).

Each entry is the command's words up to its arguments; a message formats its own
arguments after them. `tests/test_suggested.py` runs `<words> --help` for every entry.
"""
from __future__ import annotations

HF_DOWNLOAD = "hf download"          # + a hub id: fetch a model into the local cache
RAY_START_HEAD = "ray start --head"  # start a Ray cluster on this node
RAY_STATUS = "ray status"            # list a cluster's CPUs and GPUs
PIP_INSTALL = "pip install"          # + packages

ALL = {"HF_DOWNLOAD": HF_DOWNLOAD, "RAY_START_HEAD": RAY_START_HEAD, "RAY_STATUS": RAY_STATUS,
       "PIP_INSTALL": PIP_INSTALL}
