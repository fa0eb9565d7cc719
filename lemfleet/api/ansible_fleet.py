"""A pyinfra inventory file reading the Ansible inventory named by ``LEMFLEET_ANSIBLE_INVENTORY``.

The API's ``Fleet.from_ansible`` points pyinfra here; ``inventories/ansible.py`` is the same for
the pyinfra command. Groups and variables map as :mod:`lemfleet.ansible_inventory` describes.
"""

from lemfleet.ansible_inventory import inventory_path_from_env as _path_from_env
from lemfleet.ansible_inventory import load_ansible_inventory as _load

globals().update(_load(_path_from_env()))
