"""TLS client contexts for the binds: built once per settings, never asking for a passphrase.

Building a context reads the trust store (about 18 ms for the system's), on the event loop: a
carrier's binds reconnecting together would stall it for each. A context is kept per settings
and rebuilt when one of its files changes (a renewed certificate is used at the next connect).
OpenSSL asks for an encrypted key's passphrase on the terminal, blocking the process: such a
key is refused instead (its protection is its mode and owner).
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from smppd.session import TlsSettings


class EncryptedKeyError(ValueError):
    """The key_file is encrypted: smppd takes an unencrypted key."""


def _no_passphrase() -> str:
    raise EncryptedKeyError("the key is encrypted: give an unencrypted key (mode 0600)")


def load_chain(context: ssl.SSLContext, cert: str | Path, key: str | Path | None) -> None:
    """context.load_cert_chain, EncryptedKeyError where OpenSSL would ask for a passphrase."""
    context.load_cert_chain(cert, key, password=_no_passphrase)


_Key = tuple[object, ...]
_contexts: dict[_Key, ssl.SSLContext] = {}
_KEPT = 64  # settings seen at once: carriers x alternates, and a reload's new ones


def _stamp(path: str | Path | None) -> tuple[object, ...] | None:
    """What tells a file changed: its inode and ctime too, since tools that renew a
    certificate may keep its mtime (cp -p, rsync -t), and no tool sets a ctime."""
    if path is None:
        return None
    try:
        info = os.stat(path)
    except OSError:
        return (os.fspath(path), -1)  # building will say why
    return (os.fspath(path), info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def tls_context(tls: TlsSettings) -> ssl.SSLContext | None:
    """The context for `tls` (None when TLS is off): kept while its files are unchanged."""
    if not tls.enabled:
        return None
    key = (
        _stamp(tls.ca_file),
        _stamp(tls.cert_file),
        _stamp(tls.key_file),
        tls.verify_hostname,
    )
    context = _contexts.get(key)
    if context is None:
        context = ssl.create_default_context(cafile=tls.ca_file)
        if tls.cert_file is not None:
            load_chain(context, tls.cert_file, tls.key_file)
        if not tls.verify_hostname:
            context.check_hostname = False
        if len(_contexts) >= _KEPT:
            _contexts.pop(next(iter(_contexts)))
        _contexts[key] = context
    return context
