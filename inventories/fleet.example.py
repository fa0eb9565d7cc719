"""An example fleet over SSH: copy to inventories/fleet.py and edit.

Each module-level list is a pyinfra group; `group_data/<group>.py` holds its
settings, and per-host data (the second item of a tuple) wins over both.
"""

amd = [
    ("mi300x-1.example.net", {"ssh_user": "ubuntu"}),
    # An RX 6700 XT is not a ROCm target: serve it through Vulkan on purpose.
    ("rx6700-desk.example.net", {"ssh_user": "ubuntu", "gpu_backend": "vulkan"}),
]

nvidia = [
    ("h100-1.example.net", {"ssh_user": "ubuntu"}),
    ("l4-1.example.net", {"ssh_user": "ubuntu", "model_quant": "Q8_0"}),
]

cpu = [
    # Listening beyond loopback needs an API key; keep the key out of the inventory file.
    ("cpu-1.example.net", {"server_host": "0.0.0.0", "server_api_key_file": "~/.config/lemfleet/api-key"}),
]
