"""lemfleet: provision a fleet to serve a GGUF model with llama-server, and prove it works."""

__version__ = "0.1.0"
