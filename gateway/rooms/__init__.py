"""Rooms: an appointment's participants, waiting room and admission."""
