"""Device and hosted-API prices for the cost report.

A pricing mapping has the shape of ``pipeline/pricing.yaml``::

    currency: USD
    source: "..."            # where the numbers come from (printed in every report)
    as_of: "2026-11-27"
    device_hour: {H100: 2.99, H200: 3.79, A100: 1.79, L40S: 0.99, CPU: 0.05}
    hosted_api:
      source: "..."
      as_of: "..."
      per_image: {flux.1-kontext-pro: 0.04, flux.1-kontext-dev: 0.025}

A run's ``config.json`` may carry the same mapping under ``"pricing"`` (frozen at run time, so a
later edit of pricing.yaml does not change an old run's verified report) or a path to such a file.
The runner freezes it into every run; only runs written before it did fall back to pricing.yaml.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_PRICING_FILE = Path(__file__).resolve().parent.parent / "pricing.yaml"
REQUIRED_DEVICE_TYPES = ("H100", "H200", "A100", "L40S", "CPU")


class PricingError(ValueError):
    """A pricing file or mapping is missing a field or holds a value that is not a price."""


@dataclass(frozen=True)
class Pricing:
    currency: str
    source: str
    as_of: str
    device_hour: Mapping[str, float]
    hosted_source: str
    hosted_as_of: str
    hosted_per_image: Mapping[str, float]
    origin: str = field(default="(mapping)")  # file path or "config.json", named in errors

    def price_per_hour(self, device_type: str) -> float:
        """USD (or `currency`) per device-hour for `device_type`; a clear error when absent."""
        try:
            return self.device_hour[device_type]
        except KeyError:
            raise PricingError(
                f"pricing {self.origin} has no price for device type {device_type!r} "
                f"(known: {', '.join(sorted(self.device_hour))}); add `{device_type}: <price per "
                f"device-hour>` under device_hour"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """The mapping form (as in pricing.yaml), for config.json and the report."""
        return {
            "currency": self.currency,
            "source": self.source,
            "as_of": self.as_of,
            "device_hour": dict(sorted(self.device_hour.items())),
            "hosted_api": {
                "source": self.hosted_source,
                "as_of": self.hosted_as_of,
                "per_image": dict(sorted(self.hosted_per_image.items())),
            },
        }


def _price(value: Any, where: str, origin: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PricingError(f"pricing {origin}: {where} must be a number, got {value!r}")
    if value < 0:
        raise PricingError(f"pricing {origin}: {where} must be >= 0, got {value!r}")
    return float(value)


def _text(mapping: Mapping[str, Any], key: str, where: str, origin: str) -> str:
    value = mapping.get(key)
    if value is None or str(value).strip() == "":
        raise PricingError(
            f"pricing {origin}: {where}{key} is missing; say where the prices come from and when "
            f"(e.g. {key}: ...)"
        )
    return str(value)  # YAML dates become datetime.date; the report prints them as text


def pricing_from_mapping(data: Any, origin: str = "(mapping)") -> Pricing:
    """Validate a pricing mapping; every device type in REQUIRED_DEVICE_TYPES must have a price."""
    if not isinstance(data, Mapping):
        raise PricingError(f"pricing {origin}: expected a mapping at the top level, got {type(data).__name__}")
    devices = data.get("device_hour")
    if not isinstance(devices, Mapping):
        raise PricingError(f"pricing {origin}: `device_hour` mapping (device type -> price per hour) is missing")
    for device_type in REQUIRED_DEVICE_TYPES:
        if device_type not in devices:
            raise PricingError(
                f"pricing {origin} has no price for device type {device_type!r}; add "
                f"`{device_type}: <price per device-hour>` under device_hour"
            )
    device_hour = {str(k): _price(v, f"device_hour.{k}", origin) for k, v in devices.items()}
    hosted = data.get("hosted_api")
    if not isinstance(hosted, Mapping) or not isinstance(hosted.get("per_image"), Mapping):
        raise PricingError(
            f"pricing {origin}: `hosted_api.per_image` (reference model -> price per image) is missing"
        )
    per_image = {str(k): _price(v, f"hosted_api.per_image.{k}", origin) for k, v in hosted["per_image"].items()}
    if not per_image:
        raise PricingError(f"pricing {origin}: hosted_api.per_image is empty; name at least one reference")
    return Pricing(
        currency=str(data.get("currency") or "USD"),
        source=_text(data, "source", "", origin),
        as_of=_text(data, "as_of", "", origin),
        device_hour=device_hour,
        hosted_source=_text(hosted, "source", "hosted_api.", origin),
        hosted_as_of=_text(hosted, "as_of", "hosted_api.", origin),
        hosted_per_image=per_image,
        origin=origin,
    )


def load_pricing(path: str | Path | None = None) -> Pricing:
    """Read a pricing YAML (or JSON) file; the shipped pipeline/pricing.yaml when `path` is None."""
    file = Path(path) if path is not None else DEFAULT_PRICING_FILE
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise PricingError(f"pricing file {file} cannot be read ({exc.strerror or exc}); pass an existing file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PricingError(f"pricing file {file} is not valid YAML: {exc}") from None
    return pricing_from_mapping(data, origin=str(file))


def frozen_pricing_entry(run_dir: str | Path) -> Mapping[str, Any] | None:
    """The prices a run froze into its config.json (its "pricing" mapping), or None when
    there are none or the file cannot be read: the run's first invocation then freezes them.
    The pipeline (resume) and the jobs budget read them here, so both keep the same prices."""
    from pipeline.run_config import read_config_file

    entry = read_config_file(run_dir).get("pricing")
    return entry if isinstance(entry, Mapping) else None


def resolve_run_pricing(run_dir: str | Path, override: str | Path | None = None) -> Pricing:
    """Prices for one run: `override` file > config.json "pricing" (mapping or path) > default file."""
    if override is not None:
        return load_pricing(override)
    from pipeline.run_config import config_path, read_config_file

    config_file = config_path(run_dir)
    if config_file.exists():
        try:
            config = read_config_file(run_dir, strict=True)
        except ValueError as exc:
            raise PricingError(str(exc)) from None
        entry = config.get("pricing")
        if isinstance(entry, Mapping):
            return pricing_from_mapping(entry, origin=f"{config_file} (pricing)")
        if isinstance(entry, str) and entry:
            entry_path = Path(entry)
            if not entry_path.is_absolute():
                entry_path = config_file.parent / entry_path
            return load_pricing(entry_path)
    return load_pricing(None)
