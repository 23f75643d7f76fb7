"""The shapes world: a deterministic synthetic multimodal dataset (docs/design.md §5).

``eim data shapes --out DIR`` (:func:`eim_harness.shapes.writer.write_shapes`) renders scenes of
coloured shapes (:mod:`.scene`), captions them with a paraphrasing grammar (:mod:`.captions`),
poses ScienceQA problems (:mod:`.problems`) and MME/LLaVA questions (:mod:`.questions`), and
writes everything in the real formats, so the real loaders read it and a CPU demo can train
and evaluate end to end without any download.
"""
