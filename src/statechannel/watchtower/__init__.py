"""The watchtower service: keeps the latest state per channel, challenges stale closes."""
