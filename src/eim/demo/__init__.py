"""The embedded demos (``eim demo``), apart from the library: baseline vs EIM, offline, end to end.

- :mod:`eim.demo.pipeline`: the one comparison loop (data, encoders, train, evaluate, report);
- :mod:`eim.demo.coco`: ClipCap vs ClipCap + EIM on the shapes world's COCO captions;
- :mod:`eim.demo.lavin`: LaVIN vs LaVIN + EIM on its ScienceQA problems and MME questions;
- :mod:`eim.demo.encoders`, :mod:`eim.demo.pretrain`, :mod:`eim.demo.smol`: the pretrained
  small CLIP and LLM the demos stand on (no weights can be downloaded here);
- :mod:`eim.demo.report`: ``report.html``.

Only :mod:`eim.commands.demo` imports this package; the library never does (docs/design.md §10).
"""
