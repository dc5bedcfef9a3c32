"""KontextEditor.edit(loras=): switches the resident transformer's adapter set for the batch."""

from __future__ import annotations

import numpy as np
from kontext_ckpt_helpers import SIZE, tiny_editor
from lora_helpers import write_kohya_lora
from PIL import Image

from kontext_core.lora import active_loras, load_lora, set_loras


def test_edit_loras_switches_and_empty_list_is_the_base(tmp_path):
    image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8))
    adapter = load_lora(write_kohya_lora(tmp_path / "k.safetensors", seed=9))
    editor, reference = tiny_editor(), tiny_editor()

    def run(e, **kw):
        return np.stack([np.asarray(im) for im in e.edit([image], ["make the background red"], [5], **kw).images])

    base = run(editor)
    with_lora = run(editor, loras=[(adapter, 0.9)], lora_mode="fused")
    set_loras(reference.transformer, [(adapter, 0.9)], "fused")
    assert np.array_equal(with_lora, run(reference))
    assert not np.array_equal(with_lora, base)
    assert np.array_equal(run(editor), with_lora)  # loras=None keeps the applied set
    assert np.array_equal(run(editor, loras=[]), base)
    assert active_loras(editor.transformer) == ()
