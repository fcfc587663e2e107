"""pixeldojo-bot: a Discord bot for PixelDojo image generation with per-member credit limits."""
