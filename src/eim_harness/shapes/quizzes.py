"""Multiple-choice drills in ScienceQA's QCM-ALE format, for the demo's tiny LLM (docs/harness.md).

A real LLM (LLaMA) arrives at ScienceQA able to read "Options: (A) x (B) y" and answer with the
letter of the right one; LaVIN and LLaMA-Adapter only teach it to use the image. The demo's tiny
LLM learns everything it knows from the shapes text, where the answer letter is one token in a
hundred, and does not have that skill (docs/harness.md has the measurements). These drills are
its multiple-choice practice, drawn from their own seeds (never a dataset split's), so no
benchmark problem is seen: :func:`eim_harness.pretrain.drill_lm` fine-tunes the pretrained LLM on
them with the loss on the response, as instruction tuning does, before any LaVIN run.

- text problems (:func:`eim_harness.shapes.problems.text_problem`), as in the benchmark's text-only part;
- scene problems (:func:`eim_harness.shapes.problems.image_problem`) whose scene is *described in
  words* on the line before the question, where LaVIN puts the image tokens: the LLM learns to
  answer from a description, and the image model later has to supply what the words did.

Each drill is ``(instruction, response)``: the instruction with the scene line (if any) before
it, and the whole QCM-ALE response ("The answer is X. BECAUSE: lecture solution").

    from eim_harness.shapes.quizzes import quiz_pairs
    pairs = quiz_pairs(5000, scene_fraction=0.0)   # text problems only

:func:`yesno_pairs` are the MME task's drills in the same shape: a scene in words on the line
before an MME-style question ("Is there a red circle in this image? Please answer yes or no."),
answered "Yes" or "No" equally often, over all four subtasks the world poses.
"""

import random

from eim.data.formats.scienceqa import build_prompt
from eim_harness.shapes.captions import describe
from eim_harness.shapes.problems import image_problem, text_problem
from eim_harness.shapes.questions import described_question
from eim_harness.shapes.scene import sample_scene

SCENE_FRACTION = 0.75  # as in the benchmark (writer.TEXT_ONLY_FRACTION = 0.25 text-only)


def quiz_pairs(n, seed="quiz", scene_fraction=SCENE_FRACTION):
    """``n`` drills ``(instruction, response)`` (see the module docstring), reproducible from
    ``seed``; a share ``scene_fraction`` of them are scene problems with the scene in words."""
    out = []
    for i in range(n):
        rng = random.Random(f"{seed}:{i}")
        if rng.random() < scene_fraction:
            scene = sample_scene(rng)
            lead = describe(rng, scene) + "\n"
            problem = image_problem(rng, scene)
        else:
            lead, problem = "", text_problem(rng)
        instruction, response = build_prompt(problem)
        out.append((lead + instruction, response))
    return out


def yesno_pairs(n, seed="yesno"):
    """``n`` yes/no drills ``(scene in words + "\\n" + MME-style question, "Yes" | "No")``,
    reproducible from ``seed`` (see the module docstring)."""
    out = []
    for i in range(n):
        text, question, answer, _ = described_question(random.Random(f"{seed}:{i}"))
        out.append((text + "\n" + question, answer))
    return out


DRILLS = {"quiz": quiz_pairs, "yesno": yesno_pairs}  # encoder setting drills.kind -> the drills
