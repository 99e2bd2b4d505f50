"""HTTP API of node and watchtower."""
