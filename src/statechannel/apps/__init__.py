"""Payment streams and two-asset trading, built on the node API."""
