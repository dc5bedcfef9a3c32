"""Pricing file: shipped defaults, validation errors that name the file and the device type."""

import json

import pytest
import yaml

from pipeline.reports.pricing import (
    DEFAULT_PRICING_FILE,
    REQUIRED_DEVICE_TYPES,
    PricingError,
    load_pricing,
    resolve_run_pricing,
)


def test_shipped_pricing_has_every_device_type_a_source_and_a_date():
    pricing = load_pricing()
    assert set(REQUIRED_DEVICE_TYPES) <= set(pricing.device_hour)
    assert all(price > 0 for price in pricing.device_hour.values())
    assert pricing.source and pricing.as_of.startswith("20")
    assert pricing.hosted_per_image == {"flux.1-kontext-pro": 0.04, "flux.1-kontext-dev": 0.025}


def _write(tmp_path, data, name="prices.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_missing_device_type_names_file_and_type(tmp_path):
    data = yaml.safe_load(DEFAULT_PRICING_FILE.read_text())
    del data["device_hour"]["L40S"]
    path = _write(tmp_path, data)
    with pytest.raises(PricingError) as err:
        load_pricing(path)
    assert str(path) in str(err.value) and "'L40S'" in str(err.value)


def test_negative_or_text_price_is_refused(tmp_path):
    data = yaml.safe_load(DEFAULT_PRICING_FILE.read_text())
    data["device_hour"]["H100"] = -1
    with pytest.raises(PricingError, match="device_hour.H100 must be >= 0"):
        load_pricing(_write(tmp_path, data))
    data["device_hour"]["H100"] = "cheap"
    with pytest.raises(PricingError, match="device_hour.H100 must be a number"):
        load_pricing(_write(tmp_path, data))


def test_missing_source_is_refused(tmp_path):
    data = yaml.safe_load(DEFAULT_PRICING_FILE.read_text())
    del data["source"]
    with pytest.raises(PricingError, match="source is missing"):
        load_pricing(_write(tmp_path, data))


def test_unknown_device_type_lookup_names_type_and_origin():
    pricing = load_pricing()
    with pytest.raises(PricingError) as err:
        pricing.price_per_hour("T4")
    assert "'T4'" in str(err.value) and str(DEFAULT_PRICING_FILE) in str(err.value)


def test_run_config_pricing_wins_over_default_and_override_wins_over_config(tmp_path):
    data = yaml.safe_load(DEFAULT_PRICING_FILE.read_text())
    data["device_hour"]["H100"] = 9.5
    (tmp_path / "config.json").write_text(json.dumps({"pricing": data}))
    assert resolve_run_pricing(tmp_path).device_hour["H100"] == 9.5
    data["device_hour"]["H100"] = 1.25
    override = _write(tmp_path, data, "override.yaml")
    assert resolve_run_pricing(tmp_path, override).device_hour["H100"] == 1.25
    (tmp_path / "config.json").write_text(json.dumps({"pricing": "override.yaml"}))
    assert resolve_run_pricing(tmp_path).device_hour["H100"] == 1.25
