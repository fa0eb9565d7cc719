"""pyinfra inventory read from an Ansible inventory (INI, YAML or a directory).

    LEMFLEET_ANSIBLE_INVENTORY=hosts.ini pyinfra inventories/ansible.py deploy.py

Every Ansible group with hosts becomes a pyinfra group of the same name (usable with
``--limit``); group and host variables become host data, with ansible_host, ansible_port,
ansible_user and ansible_ssh_private_key_file mapped to pyinfra's SSH settings. The path comes
from the environment because pyinfra 3.10 loads inventory files before ``--data`` is applied
(``--data`` values only reach ``Inventory(override_data=...)``), so a ``--data`` key cannot
choose the inventory.

Vault-encrypted vars (``!vault`` values, encrypted vars files) are decrypted with the password
Ansible would use, ``ANSIBLE_VAULT_PASSWORD_FILE`` or ``ANSIBLE_VAULT_IDENTITY_LIST``:

    export ANSIBLE_VAULT_PASSWORD_FILE=~/.vault-pass
    LEMFLEET_ANSIBLE_INVENTORY=hosts.ini pyinfra inventories/ansible.py deploy.py

A wrong or missing password stops the run before any host is contacted, and decrypted values stay
hidden in every dump of host data (``debug-inventory``) and message (lemfleet/ansible_vault.py).
"""

from lemfleet.ansible_inventory import inventory_path_from_env as _path_from_env
from lemfleet.ansible_inventory import load_ansible_inventory as _load

globals().update(_load(_path_from_env()))
