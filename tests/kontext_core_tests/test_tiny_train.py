"""`make train-tiny`'s script at a few steps: it writes a loadable model folder, is deterministic
given its seed, and resumes from its checkpoint instead of starting over."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from kontext_core.editor import KontextEditor
from kontext_core.tiny import train

# A few steps of every phase; eager (compiling costs ~30 s and is checked below on its own).
# Latent statistics from 8 scenes, not 512 (their encoding was half of each run's time); each
# phase checkpoints at its end (every step's checkpoint was overwritten unread).
SMALL = ["--ae-steps", "2", "--ae-batch", "4", "--steps", "3", "--batch", "4", "--dec-scenes", "4",
         "--dec-steps", "2", "--dec-batch", "4", "--final-eval-n", "4", "--eval-every", "0",
         "--checkpoint-every", "1000", "--stats-scenes", "8", "--workers", "0", "--no-compile"]
# For runs whose decoder and evaluation no assertion reads (the transformer is trained before them).
NO_DECODER = ("--dec-steps", "0", "--final-eval-n", "1")


def _train(out, *extra: str) -> dict:
    assert train.main(["--out", str(out), *SMALL, *extra]) == 0
    return json.loads((out / "training.json").read_text())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-a")
    return out, _train(out)


def test_writes_a_model_folder_the_editor_loads(trained):
    out, meta = trained
    assert (meta["ae_steps_run"], meta["steps_run"], meta["dec_steps_run"]) == (2, 3, 2)
    assert set(meta["metrics"]) >= {"background_product_psnr", "background_mae", "recolour_mae"}
    assert not (out / "decoder_data.pt").exists(), "the decoder phase's scratch data is removed when done"
    editor = KontextEditor.load(out)
    result = editor.edit([Image.new("RGB", (64, 64), (200, 30, 30))], ["make the background blue"], [0])
    assert result.images[0].size == (64, 64)


def test_same_seed_same_weights_other_seed_different(trained, tmp_path):
    out, _ = trained
    again = tmp_path / "again"
    _train(again)
    for name in ("transformer.safetensors", "ae.safetensors"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name
    other = tmp_path / "other"
    _train(other, "--seed", "1", *NO_DECODER)
    assert (other / "transformer.safetensors").read_bytes() != (out / "transformer.safetensors").read_bytes()


def test_decoder_phase_changes_only_the_decoder(trained, tmp_path):
    out, _ = trained
    skipped = tmp_path / "no-decoder"
    _train(skipped, *NO_DECODER)
    tuned = KontextEditor.load(out).autoencoder.state_dict()
    plain = KontextEditor.load(skipped).autoencoder.state_dict()
    changed = {k.split(".")[0] for k in tuned if not torch.equal(tuned[k], plain[k])}
    assert changed == {"decoder"}


def test_resumes_from_its_checkpoint(trained, tmp_path, capsys):
    out, _ = trained
    longer = tmp_path / "resumed"
    longer.mkdir()
    (longer / "train_state.pt").write_bytes((out / "train_state.pt").read_bytes())
    meta = _train(longer, "--steps", "5")
    assert "resuming from" in capsys.readouterr().out
    state = torch.load(longer / "train_state.pt", weights_only=False)
    # The autoencoder is not retrained; the transformer goes on from step 3 to 5.
    assert (meta["ae_steps_run"], state["tf_step"], meta["steps_run"]) == (2, 5, 5)


def test_compile_transformer_compiles_every_block_and_keeps_weight_names():
    tf = KontextEditor.load("tiny-random").transformer
    keys = list(tf.state_dict())
    train.compile_transformer(tf)
    assert list(tf.state_dict()) == keys  # checkpoints stay loadable by the plain classes
    blocks = [*tf.double_blocks, *tf.single_blocks]
    assert blocks and all(getattr(b, "_compiled_call_impl", None) is not None for b in blocks)
