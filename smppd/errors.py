"""The root of smppd's exception tree.

Each layer owns a subtree: the codec (`smppd.pdu.errors`), the session, the queue, the API, the
config. Callers catch a layer's base class; nothing outside a layer raises that layer's errors.
"""


class SmppdError(Exception):
    """Base class of every error smppd raises on purpose."""
