"""kontext_core package."""
