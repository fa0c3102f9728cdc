"""The assistant daemon: one asyncio loop, one actor per job, one thread that writes the repo."""
