"""kontext-tiny: the small shipped model, trained by our own code on synthetic product photos."""
