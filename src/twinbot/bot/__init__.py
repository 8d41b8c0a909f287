"""Stage 3, the twin talks: load a trained adapter and reply, in the terminal (`chat`), over HTTP
(`serve`) or on Discord (`discord_bot`)."""
