"""reflectrl: two-player online RL fine-tuning of language-model agents (Reflect-RL)."""

import os as _os

__version__ = "0.1.0"

#: oneDNN, which runs torch's bf16 matrix products on CPU, keeps a compiled kernel for every shape it
#: meets (1,024 by default); each new padded batch length adds a set, so a bf16 training held ever more
#: of them. 64 holds a training step's set: SmolLM2's reflector SFT peaked at 3.49 GB after 16 steps
#: against 4.04 GB, a tiny model's at 1.22 GB after 90 steps against 1.56 GB, at the same speed. Read
#: when oneDNN makes its first kernel; a value the user set is kept.
ONEDNN_KERNEL_CACHE = 64
_os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(ONEDNN_KERNEL_CACHE))
