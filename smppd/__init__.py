"""smppd: a direct SMPP v3.4 carrier connector daemon."""

__version__ = "0.1.0"
