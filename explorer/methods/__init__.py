"""One module per method behind one protocol (protocol.py); registry.py names them."""
