"""The one import of the common path (eim.api, exported by eim itself)."""

import importlib
import subprocess
import sys

import eim
from eim.api import Inference


def test_import_eim_exports_the_common_path_without_importing_torch():
    code = ("import sys, eim; assert 'torch' not in sys.modules; "
            "names = ['load_recipe', 'load_dataset', 'train', 'load_for_inference', 'Chat']; "
            "assert all(n in dir(eim) for n in names); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]
    assert eim.train.__module__ == "eim.api" and eim.Chat.__module__ == "eim.chat"
    importlib.import_module("eim.training.trainer")  # the subpackage's name does not rebind eim.train
    assert eim.train.__module__ == "eim.api"


def test_load_for_inference_is_a_named_tuple_that_unpacks(clipcap, tmp_path):
    model, tok, proc = clipcap
    out = Inference(model, tok, proc, "recipe")
    m, t, p, r = out
    assert (m, t, p, r) == (out.model, out.tokenizer, out.image_processor, out.recipe)
