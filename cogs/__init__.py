"""The bot's discord.py extensions: slash commands and result buttons over the services."""
