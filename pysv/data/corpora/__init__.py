"""Stage 0, one module per corpus: each turns a corpus layout into sets for :mod:`pysv.data.prepare`.

* :mod:`~pysv.data.corpora.mini`: the built-in synthetic corpus (:mod:`~pysv.data.corpora.mini_synth`),
* :mod:`~pysv.data.corpora.folder`: any ``<speaker>/<utterance>.{wav,flac}`` tree,
* :mod:`~pysv.data.corpora.voxceleb`: VoxCeleb1 / VoxCeleb2 from local directories,
* :mod:`~pysv.data.corpora.kaldi`: existing Kaldi data dirs (``wav.scp`` paths or commands, ``segments``),
* :mod:`~pysv.data.corpora.musan`, :mod:`~pysv.data.corpora.rirs`: the augmentation sets (noise,
  room impulse responses) that training reads (:mod:`pysv.data.waveform_augment`).
"""
