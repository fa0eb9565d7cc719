"""The deploy's first steps alone, for GPU hosts whose compile is not wanted: detect, plan, drivers.

The same calls deploy.py makes, in its order: the host's facts from its own probes (a test-bed host presenting a
recorded GPU answers them, ``lemfleet.testbed.add_gpu_host``), the plan and the drivers plan, then the drivers
step itself. ``--data build_packages=true`` adds the packages the build step installs before it compiles, for a
bench that configures llama.cpp by hand (bench/hip_targets.py). Used through ``lemfleet.testbed.gpuhost``.
"""

from pyinfra import host
from pyinfra.operations import apt

from lemfleet.roles import apt_proxy, detect, hoststate, llama_cpp
from lemfleet.roles.controller import settings_for
from lemfleet.roles.drivers import install_drivers, plan_for_host
from lemfleet.roles.plan import ModelInfo, plan_host

settings = settings_for(host)
facts = detect.gather(extra_paths=[settings["model_dir"]])
plan = plan_host(facts, settings, ModelInfo(alias="lemfleet-tiny-gemma3"))
hoststate.declare([*apt_proxy.PATHS])
apt_proxy.configure_apt_proxy()
install_drivers(plan=plan_for_host(facts, plan.backend, settings), compiles=None)  # None: the build packages too
if host.data.get("build_packages"):
    apt.packages(name="Install build dependencies", packages=llama_cpp.BUILD_PACKAGES + llama_cpp.RUNTIME_PACKAGES,
                 update=True, cache_time=3600, no_recommends=True)  # fmt: skip
