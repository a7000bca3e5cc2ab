"""Persistent state of one node: agents, sessions, appointments (SQLite)."""
