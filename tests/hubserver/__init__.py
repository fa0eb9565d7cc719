"""A local server speaking enough of the Hugging Face hub protocol for ``huggingface_hub``: test machinery.

The unit and test-bed tests, and the benchmarks, point ``HF_ENDPOINT`` at it;
it is not shipped. ``python -m tests.hubserver --root DIR`` serves a folder.
"""

from tests.hubserver.server import LFS_MIN_SIZE, LFS_SUFFIXES, Fault, HubServer, Request, main

__all__ = ["LFS_MIN_SIZE", "LFS_SUFFIXES", "Fault", "HubServer", "Request", "main"]
