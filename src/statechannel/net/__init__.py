"""Peer transport: framed, authenticated, encrypted TCP. Arrives with the channels work."""
