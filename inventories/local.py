"""This machine only: `pyinfra inventories/local.py deploy.py` (same as `pyinfra @local deploy.py`)."""

local = ["@local"]
