"""Synthetic e-commerce product photos and exact edit targets (numpy + PIL only).

Used to train and evaluate the tiny Kontext model and to build the shipped demo catalog.

    from kontext_core.synthetic import sample_batch, render, Scene
    batch = sample_batch(seed=0, n=64, size=64, split="train")   # list[Example]
"""

from .bench import benchmark
from .demo import DEMO_PRODUCTS, DEMO_SIZE, demo_examples, demo_photo, image_path
from .instructions import instruction_vocabulary, instruction_words
from .palette import COLOURS, all_backgrounds
from .products import PRODUCTS
from .sampling import (
    EDIT_KINDS,
    Example,
    batch_arrays,
    sample_batch,
    sample_example,
    sample_scene,
    split_of,
)
from .scene import Scene, render

__all__ = [
    "COLOURS", "DEMO_PRODUCTS", "EDIT_KINDS", "PRODUCTS", "Example", "Scene", "all_backgrounds",
    "batch_arrays", "benchmark", "demo_examples", "instruction_vocabulary", "instruction_words",
    "render", "sample_batch", "sample_example", "sample_scene", "split_of", "DEMO_SIZE", "demo_photo", "image_path",
]
