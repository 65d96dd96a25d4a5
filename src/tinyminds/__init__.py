"""tinyminds: small language models trained the BabyLM way, and teacher ensembles distilled into them."""

__version__ = "0.1.0"
