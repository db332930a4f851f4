"""--user, --group, --umask: the master binds (port 80 as root), then each worker becomes USER and
GROUP before it imports the app. The names are checked once, in the master, before it binds."""

from __future__ import annotations

import grp
import os
import pwd
from typing import Optional, Tuple

from .errors import ConfigError


def resolve(user: Optional[str], group: Optional[str]) -> Tuple[Optional[int], Optional[int], Optional[str]]:
    """(uid, gid, user name) to become, or None where nothing changes; ConfigError when a name is
    unknown, or when a process that is not root asks to become someone else."""
    uid = gid = name = None
    if user:
        try:
            entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        except (KeyError, OverflowError):
            raise ConfigError("--user %s: no such user" % user) from None
        uid, gid, name = entry.pw_uid, entry.pw_gid, entry.pw_name
    if group:
        try:
            gid = grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
        except (KeyError, OverflowError):
            raise ConfigError("--group %s: no such group" % group) from None
    if os.geteuid() != 0 and ((uid is not None and uid != os.geteuid()) or (gid is not None and gid != os.getegid())):
        raise ConfigError("--user/--group: only a master started as root can run its workers as another user")
    return uid, gid, name


def drop(uid: Optional[int], gid: Optional[int], name: Optional[str]) -> None:
    """In a worker, before the app is imported: become uid/gid, with the user's groups (or only
    GROUP's). Nothing to do when they are ours already."""
    if os.geteuid() == 0:
        if name is not None:
            os.initgroups(name, gid)
        elif gid is not None:
            os.setgroups([gid])
    if gid is not None and gid != os.getegid():
        os.setgid(gid)
    if uid is not None and uid != os.geteuid():
        os.setuid(uid)
        os.environ["HOME"] = pwd.getpwuid(uid).pw_dir
        if name:
            os.environ["USER"] = os.environ["LOGNAME"] = name


def give(path: Optional[str], uid: Optional[int], gid: Optional[int]) -> None:
    """A file the workers write and reopen (a log, the access log): theirs after the drop."""
    if path and path != "-" and (uid is not None or gid is not None) and os.geteuid() == 0:
        try:
            os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)
        except FileNotFoundError:
            pass


def umask(text: str) -> int:
    """--umask: octal (022, 0o022)."""
    digits = text[2:] if text.lower().startswith("0o") else text
    value = int(digits, 8)        # ValueError if not octal
    if not 0 <= value <= 0o777:
        raise ValueError("not a umask: from 000 to 777 (octal)")
    return value
