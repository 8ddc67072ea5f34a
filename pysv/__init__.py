"""pysv: a speaker-verification toolkit shaped as a Kaldi-style recipe with Python stages.

``pysv.load(path)`` opens a trained system (``exp/<system>`` or an exported bundle) for embedding,
scoring and verification (:mod:`pysv.inference`).
"""

__version__ = "0.1.0"


def load(path, device: str = "cpu", vad=None):
    """The trained system at ``path``: a :class:`pysv.inference.SpeakerModel` (``vad="energy"``:
    voiced frames only, as stage 1 with ``--vad energy``)."""
    from pysv.inference import load as _load  # deferred: `import pysv.<module>` stays light (no torch)
    return _load(path, device=device, vad=vad)
