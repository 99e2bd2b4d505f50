"""Durable state (SQLite, and PostgreSQL for the watchtower). Arrives with the channels work."""
