"""The shell around core: channel manager, chain watcher, public Python API."""
