"""RL: training data, rewards and an online environment grounded in persona state, in TRL's formats.

- ``rl.datasets``: SFT, DPO, KTO and GRPO datasets from a store's questions (conversational, split by user);
- ``rl.rewards``: reward functions with TRL's ``reward_funcs`` signature;
- ``rl.env``: ``PersonaEnv`` / ``PersonaVectorEnv``, Gymnasium environments where a policy plays the
  chatbot to live simulated users, every step written to the store; ``rl.env_reward`` scores a reply;
- ``rl.online``: ``OnlineGRPO``, the glue that lets TRL's GRPOTrainer train on those users;
- ``rl.train``: ``personasim train``, TRL's trainers driven from a store with metrics written back.
"""
