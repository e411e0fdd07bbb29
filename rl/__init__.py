"""RL: training data and rewards grounded in persona state (TRL). Not built yet: see issue 7."""
