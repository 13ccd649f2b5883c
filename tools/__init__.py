"""Tools that ship with smppd but are not part of the daemon: the fake SMSC and the demo."""
