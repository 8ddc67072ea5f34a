"""pysv: a speaker-verification toolkit shaped as a Kaldi-style recipe with Python stages."""

__version__ = "0.1.0"
