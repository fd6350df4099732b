"""The instruction world: tasks, simulated labelers, a pretraining corpus and a hidden gold labeler.

InstructGPT trains on demonstrations and rankings written by people. We have none, so this package
ships a small deterministic world instead: eight task families mirroring the use cases of the
paper's Table 1 (Ouyang et al. 2022), demonstrations from simulated labelers of mixed quality, a
corpus that states the world's facts, and `gold_score`, the "human preference" that the reward model
must learn from noisy comparisons and that evaluation uses to show RLHF beats SFT.

    from minigpt_rlhf.world import FAMILIES, family_of, gold_score
    gold_score("What is the capital of Zorvia?", "The capital of Zorvia is Mellow.")   # 1.0

See docs/world.md for the families, the quality modes and the gold components.
"""

from minigpt_rlhf.world.build import (
    QUALITY_PROPORTIONS,
    SPLIT_FILES,
    SPLIT_SIZES,
    World,
    demo_gold_means,
    generate_world,
    main,
    write_world,
)
from minigpt_rlhf.world.family import MAX_PROMPT_WORDS, QUALITY_MODES
from minigpt_rlhf.world.gold import (
    FAMILIES,
    GOLD_WEIGHTS,
    family_of,
    gold_components,
    gold_score,
    ideal_response,
)

__all__ = [
    "FAMILIES", "GOLD_WEIGHTS", "MAX_PROMPT_WORDS", "QUALITY_MODES", "QUALITY_PROPORTIONS", "SPLIT_FILES",
    "SPLIT_SIZES", "World", "demo_gold_means", "family_of", "generate_world", "gold_components", "gold_score",
    "ideal_response", "main", "write_world",
]
