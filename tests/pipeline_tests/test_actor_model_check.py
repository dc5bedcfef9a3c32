"""An actor whose loaded model is not the driver's (another copy of the weights on its node,
another kontext_core) refuses to start, so nothing it makes is cached under the driver's keys."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pipeline_helpers import make_manifest, run_once

from pipeline.actors import check_priced, check_same_model, device_type_from_name
from pipeline.cache import numerics_version
from pipeline.errors import ConfigError


def test_same_model_passes_and_other_weights_or_numerics_are_named() -> None:
    editor = SimpleNamespace(fingerprint="a" * 64)
    check_same_model(editor, {"fingerprint": "a" * 64, "numerics": numerics_version()}, "m")
    check_same_model(SimpleNamespace(), {"fingerprint": "a" * 64}, "m")  # a test double without one
    with pytest.raises(RuntimeError) as err:
        check_same_model(editor, {"fingerprint": "b" * 64}, "/models/kontext")
    msg = str(err.value)
    assert "'/models/kontext'" in msg and "aaaaaaaaaaaa here, bbbbbbbbbbbb on the driver" in msg
    assert "same copy of the weights" in msg
    with pytest.raises(RuntimeError, match="has numerics .* the driver 'other-numerics'.*same kontext-batch version"):
        check_same_model(editor, {"numerics": "other-numerics"}, "m")


class OtherWeightsFactory:
    """Loads the test model but reports another fingerprint, as a stale copy on a node would."""

    def __call__(self, model: str, device: str, dtype: Any) -> Any:
        from kontext_core import KontextEditor

        editor = KontextEditor.load(model, device=device, dtype=dtype)
        editor.fingerprint = "f" * 64
        return editor


def test_run_whose_actors_load_other_weights_stops_before_storing_anything(tmp_path: Path) -> None:
    from ray import cloudpickle

    manifest = make_manifest(tmp_path / "m", products=2, variants=1)
    out = tmp_path / "out"
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    with pytest.raises(ConfigError) as err:
        run_once(manifest, out, editor_factory=OtherWeightsFactory())
    msg = str(err.value)
    assert "no actor could load the model" in msg and "not the one the driver planned with" in msg
    assert "ffffffffffff here" in msg
    objects = out / "store" / "objects"
    # no output image: only the text phase's embeddings (keyed by the text encoders' own
    # fingerprint, so still right) may be there
    stored = [p for p in objects.rglob("*") if p.is_file()] if objects.exists() else []
    assert not [p for p in stored if p.suffix not in (".safetensors", ".json")], stored
    assert all(json.loads(p.read_text())["kind"] == "text-embedding"
               for p in stored if p.suffix == ".json")


@pytest.mark.parametrize("name, device_type", [
    ("NVIDIA H100 80GB HBM3", "H100"), ("NVIDIA GH200 480GB", "GH200"), ("NVIDIA H200", "H200"),
    ("NVIDIA A100-SXM4-80GB", "A100"), ("NVIDIA A10G", "A10G"), ("NVIDIA L40S", "L40S"), ("NVIDIA L4", "L4"),
    ("NVIDIA GeForce RTX 4090", "GEFORCE RTX 4090"),
])
def test_device_type_from_the_cuda_name(name: str, device_type: str) -> None:
    assert device_type_from_name(name) == device_type


def test_unpriced_device_is_refused_naming_the_fix() -> None:
    check_priced("H100", ["CPU", "H100"])
    check_priced("B200", None)  # no pricing given: nothing to check
    with pytest.raises(RuntimeError) as err:
        check_priced("B200", ["CPU", "H100"])
    msg = str(err.value)
    assert "device type 'B200'" in msg and "priced: CPU, H100" in msg
    assert "add `B200: <price per device-hour>` under device_hour" in msg


def test_run_on_a_device_its_pricing_lacks_stops_before_any_row(tmp_path: Path) -> None:
    import yaml

    from pipeline.reports.pricing import load_pricing

    table = load_pricing().to_dict()
    table["device_hour"] = {k: v for k, v in table["device_hour"].items() if k != "CPU"}
    pricing = tmp_path / "pricing.yaml"
    pricing.write_text(yaml.safe_dump(table))
    manifest = make_manifest(tmp_path / "m", products=2, variants=1)
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as err:
        run_once(manifest, out, pricing=str(pricing))
    msg = str(err.value)  # CPU runs are priced before Ray starts; GPU actors check their card
    assert "no price for device type 'CPU'" in msg and "add `CPU: <price per device-hour>`" in msg
    objects = out / "store" / "objects"
    # no output image: only the text phase's embeddings (keyed by the text encoders' own
    # fingerprint, so still right) may be there
    stored = [p for p in objects.rglob("*") if p.is_file()] if objects.exists() else []
    assert not [p for p in stored if p.suffix not in (".safetensors", ".json")], stored
    assert all(json.loads(p.read_text())["kind"] == "text-embedding"
               for p in stored if p.suffix == ".json")
