"""The llama.cpp step alone, for tests/testbed/test_build_trust.py: plan the host, then build or receive its build.

The settings are the host's own (``--data`` items): a tiny source tarball there makes the
compile take seconds while every part of build once and build trust runs as in a deploy.
"""

from pyinfra import host

from lemfleet.roles import detect, hoststate, llama_cpp
from lemfleet.roles.controller import settings_for, source_for
from lemfleet.roles.llama_cpp import install_llama_cpp
from lemfleet.roles.plan import ModelInfo, plan_host

settings = settings_for(host)
facts = detect.gather(extra_paths=[settings["model_dir"]])
plan = plan_host(facts, settings, ModelInfo(alias="build-only", size_bytes=1))
source = source_for(settings)
hoststate.declare(llama_cpp.managed_paths(plan, source))
install_llama_cpp(plan, source)  # type: ignore[call-arg, arg-type]  # pyinfra types a @deploy as an operation
