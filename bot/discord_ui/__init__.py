"""Discord-facing code that is not a command: presenter, status edits, embeds, errors."""
