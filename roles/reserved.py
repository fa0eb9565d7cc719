"""Names lemfleet must never take over: the system's users, units and directories.

The service user is created, re-homed and given ``nologin``; the unit file
is overwritten; the model directory is made and chmod-ed. Pointed at
``ubuntu``, ``ssh`` or ``/tmp``, each of those would break the host. These
checks refuse such names on the controller, before any host is contacted.
They know names, not hosts: a name that is free here may still be taken on a
host (a login user, a vendor unit, a directory someone made), which the
deploy's ownership check (``roles/ownership.py``) refuses on the host before
anything is changed there.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

from lemfleet.roles.values import UnsafeValue, clean

# Accounts of Debian/Ubuntu base systems and common packages, and the login users cloud images and
# installers create (useradd(8) accepts at most 32 characters).
RESERVED_USERS = frozenset(
    """root daemon bin sys sync games man lp mail news uucp proxy www-data backup list irc gnats nobody nogroup
    _apt _chrony _rpc messagebus sshd syslog uuidd tcpdump tss polkitd dnsmasq avahi colord geoclue pulse rtkit
    usbmux postfix postgres mysql redis apt-cacher-ng statd landscape pollinate fwupd-refresh lxd docker adm
    sudo wheel staff users video render audio input kvm disk tty dialout plugdev netdev ubuntu debian admin
    ec2-user centos fedora rocky almalinux cloud-user opc pi vagrant ansible""".split()  # noqa: SIM905
)
RESERVED_USER_PREFIXES = ("systemd-", "_")

# Units a host cannot lose: remote access, the service manager's own, boot targets, and common daemons.
RESERVED_UNITS = frozenset(
    """ssh sshd dbus cron crond atd rsyslog syslog networking network NetworkManager wpa_supplicant getty
    console-getty container-getty init emergency rescue multi-user graphical default basic sysinit shutdown
    reboot poweroff halt kexec sockets timers paths slices local-fs remote-fs swap polkit udisks2
    accounts-daemon apparmor auditd ufw nftables iptables firewalld chrony chronyd ntp ntpd docker containerd
    snapd unattended-upgrades apt-daily apt-daily-upgrade cloud-init cloud-config cloud-final cloud-init-local
    nvidia-persistenced apt-cacher-ng postgresql mysql nginx apache2 sudo user""".split()  # noqa: SIM905
)
RESERVED_UNIT_PREFIXES = ("systemd-", "getty@", "serial-getty@", "user@", "user-", "dbus-", "cloud-", "nvidia-")
UNIT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*(@[A-Za-z0-9_.:-]+)?")
UNIT_NAME_MAX = 255 - len(".service")

# Directories that hold the system or other people's data: taken (chmod-ed, pruned) only over our dead body.
SYSTEM_DIRS = frozenset(
    """/ /bin /boot /dev /etc /home /lib /lib32 /lib64 /libx32 /media /mnt /opt /proc /root /run /sbin /srv /sys
    /tmp /usr /var /var/lib /var/cache /var/log /var/tmp /var/spool /var/mail /var/opt /var/local /var/backups
    /var/www /usr/local /usr/lib /usr/share /usr/bin /usr/sbin /opt/lemfleet /etc/lemfleet""".split()  # noqa: SIM905
)
# Trees whose every subdirectory belongs to the system (or is not a real directory at all).
SYSTEM_TREES = ("/proc/", "/sys/", "/dev/", "/run/", "/tmp/", "/var/tmp/", "/etc/", "/boot/", "/usr/", "/bin/",
                "/sbin/", "/lib/", "/lib64/", "/opt/lemfleet/llama.cpp/")  # fmt: skip
USER_HOMES = re.compile(r"/home/[^/]+|/root/.*")


def service_user(name: str, value: Any) -> Any:
    """A user name lemfleet may create and own: useradd's syntax, and not a system or login account."""
    clean(name, value, max_bytes=32)
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", value):
        raise UnsafeValue(f"{name}={value!r} is not valid; accepted: a lower-case user name of at most 32 characters")
    if value in RESERVED_USERS or value.startswith(RESERVED_USER_PREFIXES):
        raise UnsafeValue(
            f"{name}={value!r} is a system or login account that lemfleet would re-home and lock; "
            "accepted: a user of lemfleet's own, such as the default 'lemfleet'"
        )
    return value


def unit_name(name: str, value: Any) -> Any:
    """A unit name systemd accepts (ASCII only) that is not one of the system's own units."""
    clean(name, value, max_bytes=UNIT_NAME_MAX)
    if value.endswith(".service"):
        raise UnsafeValue(f"{name}={value!r} is not valid; accepted: the name without '.service'")
    if not UNIT_NAME.fullmatch(value):
        raise UnsafeValue(
            f"{name}={value!r} is not a unit name systemd accepts; accepted: ASCII letters, digits, "
            "'_', '.', ':' and '-' (no other unicode), optionally '@' and an instance"
        )
    base = value.split("@", 1)[0]
    if base in RESERVED_UNITS or value.startswith(RESERVED_UNIT_PREFIXES) or base.startswith("systemd"):
        raise UnsafeValue(
            f"{name}={value!r} is a unit of the system that lemfleet would overwrite; "
            "accepted: a unit of lemfleet's own, such as the default 'lemfleet-llama'"
        )
    return value


def model_dir(name: str, value: Any) -> Any:
    """An absolute, normal path that is not a system directory, a user's home or inside a system tree."""
    clean(name, value)
    normal = posixpath.normpath(value)
    if normal in SYSTEM_DIRS or (normal + "/").startswith(SYSTEM_TREES) or USER_HOMES.fullmatch(normal):
        raise UnsafeValue(
            f"{name}={value!r} is a directory of the system or of a user, which lemfleet would chmod and prune; "
            "accepted: a directory of lemfleet's own, such as the default '/var/lib/lemfleet/models'"
        )
    if not value.startswith("/") or normal != value.rstrip("/") or value.startswith("//"):
        raise UnsafeValue(
            f"{name}={value!r} is not valid; accepted: an absolute path without '.', '..' or repeated '/'"
        )
    return value
