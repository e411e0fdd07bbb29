"""RL: training data and rewards grounded in persona state, in TRL's formats.

``rl.datasets`` turns a store's questions into SFT, DPO, KTO and GRPO datasets (conversational,
split by user); ``rl.rewards`` holds reward functions with TRL's ``reward_funcs`` signature. The
online environment and ``personasim train`` are still to come (issue 7).
"""
