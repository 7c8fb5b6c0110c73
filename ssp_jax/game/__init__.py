"""The self-play game: the two roles' prompts, the step that plays them, attack checks,
diversity and the collapse monitor."""
