"""One parser per format; each turns bytes into a `ParsedDocument` (see `base.py`)."""
