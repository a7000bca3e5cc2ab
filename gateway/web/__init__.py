"""The aiohttp application: ops endpoints now; pages, signaling and REST API later."""
