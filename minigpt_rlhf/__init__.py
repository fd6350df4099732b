"""minigpt_rlhf: InstructGPT (SFT, reward model, PPO) on a GPT-2-style transformer in plain PyTorch."""
