"""reflectrl: two-player online RL fine-tuning of language-model agents (Reflect-RL)."""

__version__ = "0.1.0"
