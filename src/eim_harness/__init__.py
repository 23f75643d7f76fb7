"""The research harness: ``eim``'s embedded benchmark worlds, demos and studies, a client of the library.

``eim`` is the method (model, losses, banks, training, data formats, evaluation, export, chat);
this package is what the project measures it with, offline, and the library never imports it
(as ``open_clip_train`` trains with ``open_clip``):

- :mod:`eim_harness.shapes`: the shapes world, a scene generator that writes COCO, ScienceQA,
  LLaVA, Alpaca and MME files (``eim data shapes``);
- :mod:`eim_harness.tiny`, :mod:`eim_harness.tokenizer`: small real-architecture CLIP and LLMs and
  their tokenizers, built from configs (the tests' fixtures and the demos' starting points);
- :mod:`eim_harness.encoders`, :mod:`eim_harness.pretrain`, :mod:`eim_harness.smol`: the pretrained
  small CLIP and LLM the demos stand on (no weights can be downloaded), cached;
- :mod:`eim_harness.pipeline` with its tasks :mod:`eim_harness.coco`, :mod:`eim_harness.lavin`,
  :mod:`eim_harness.llava` and their reports: ``eim demo``;
- :mod:`eim_harness.study`, :mod:`eim_harness.worlds` and the specs in ``studies/``: ``eim study``;
- :mod:`eim_harness.commands`: the verbs above, which ``eim``'s command line finds through the
  ``eim.cli`` entry point (docs/harness.md).
"""
