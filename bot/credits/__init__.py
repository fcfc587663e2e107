"""Who may generate, at what cost: periods, admission, blocked terms, moderation, reports."""
