"""Context lives with the method protocol (explorer/methods/protocol.py); re-exported for old imports."""

from explorer.methods.protocol import Context  # noqa: F401
