"""dsd: a LAN cluster daemon."""

__version__ = "0.1.0"
