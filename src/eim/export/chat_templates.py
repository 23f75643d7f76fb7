"""The exported model's chat template: eim's conversation templates (:mod:`eim.model.template`) as
Jinja, so ``processor.apply_chat_template`` (lmms-eval's ``llava_hf``, vLLM, transformers) renders a
conversation exactly as training rendered it (docs/design.md §12).

Every template first reads the messages as LLaVA's processor gives them (content a string, or a list
of ``text`` / ``image`` parts), takes a leading ``system`` message as the system line, and keeps
the (question, answer) turns with ``<image>`` removed from the text; a last user turn is the
question to answer. The image, when a message holds one, goes where the template puts it (the start
of the first user turn; for ``raw`` and ``plain`` right after BOS). The export checks the rendering
against eim's own token ids before it writes anything (:func:`eim.export.llava_hf.verify`).
"""

from typing import Optional

from eim.model.template import CHATML_SYSTEM, LLAMA_2_SYSTEM, VICUNA_SYSTEM

# messages -> ns.system, ns.turns ([question, answer or none]), ns.image
_READ = """{%- set ns = namespace(system=none, turns=[], q=none, image=false) -%}
{%- for message in messages -%}
{%- set part = namespace(text='') -%}
{%- if message['content'] is string -%}{%- set part.text = message['content'] -%}
{%- if '<image>' in part.text -%}{%- set ns.image = true -%}{%- endif -%}
{%- else -%}{%- for c in message['content'] -%}
{%- if c['type'] == 'image' -%}{%- set ns.image = true -%}
{%- elif c['type'] == 'text' -%}{%- set part.text = part.text + c['text'] -%}
{%- if '<image>' in c['text'] -%}{%- set ns.image = true -%}{%- endif -%}{%- endif -%}
{%- endfor -%}{%- endif -%}
{%- set text = part.text | replace('<image>', '') | trim -%}
{%- if message['role'] == 'system' and loop.first -%}{%- set ns.system = text -%}
{%- elif message['role'] == 'user' -%}
{%- if ns.q is not none -%}{{ raise_exception('two user turns in a row: a conversation alternates user and assistant') }}{%- endif -%}
{%- set ns.q = text -%}
{%- elif message['role'] == 'assistant' -%}
{%- if ns.q is none -%}{{ raise_exception('an assistant turn must follow a user turn') }}{%- endif -%}
{%- set ns.turns = ns.turns + [[ns.q, text]] -%}{%- set ns.q = none -%}
{%- else -%}{{ raise_exception('unexpected ' + message['role'] + ' message') }}
{%- endif -%}
{%- endfor -%}
{%- if ns.q is not none -%}{%- set ns.turns = ns.turns + [[ns.q, none]] -%}{%- endif -%}
"""

# the first user turn with the image, as LLaVA-1.5 writes it: "<image>\n" + question
_Q = "{%- set q = (('<image>\\n' + t[0]) | trim) if (loop.first and ns.image) else t[0] -%}"

_EMIT = {
    "raw": """{{ @@BOS@@ }}{%- if ns.image -%}<image>{%- endif -%}
{%- for t in ns.turns -%}{{ t[0] }}{%- if t[1] is not none -%}
{%- if t[0] and t[1] and t[0][-1] not in ' \\n\\t' -%}{{ ' ' }}{%- endif -%}{{ t[1] }}{{ eos_token }}{%- endif -%}
{%- endfor -%}""",
    "plain": """{%- if ns.turns | length > 1 -%}{{ raise_exception('the plain template renders one turn') }}{%- endif -%}
{{ @@BOS@@ }}{%- if ns.image -%}<image>{%- endif -%}
{%- for t in ns.turns -%}{%- if t[1] is not none -%}{{ t[1] + '\\n' }}{%- endif -%}{%- endfor -%}""",
    "vicuna_v1": """{{ @@BOS@@ }}{{ (ns.system if ns.system is not none else @@VICUNA@@) + ' ' }}
{%- for t in ns.turns -%}""" + _Q + """USER: {{ q }} ASSISTANT:
{%- if t[1] is not none -%}{{ ' ' + t[1] + eos_token }}{%- endif -%}{%- endfor -%}""",
    "llama_2": """{{ @@BOS@@ }}{%- set sys = ns.system if ns.system is not none else @@LLAMA2@@ -%}
{%- for t in ns.turns -%}""" + _Q + """
{%- if loop.first and sys -%}{%- set q = '<<SYS>>\\n' + sys + '\\n<</SYS>>\\n\\n' + q -%}{%- endif -%}
{%- if not loop.first -%}{{ bos_token }}{%- endif -%}[INST] {{ q }} [/INST]
{%- if t[1] is not none -%}{{ ' ' + t[1] + ' ' + eos_token }}{%- endif -%}{%- endfor -%}""",
    "chatml": """{{ @@BOS@@ }}{%- set sys = ns.system if ns.system is not none else @@CHATML@@ -%}
{%- if sys -%}{{ '<|im_start|>system\\n' + sys + '<|im_end|>\\n' }}{%- endif -%}
{%- for t in ns.turns -%}""" + _Q + """{{ '<|im_start|>user\\n' + q + '<|im_end|>\\n<|im_start|>assistant\\n' }}
{%- if t[1] is not none -%}{{ t[1] + '<|im_end|>\\n' }}{%- endif -%}{%- endfor -%}""",
}

# the tokenizer's own template, fed the messages with string contents and the image written into
# the first user turn (the template must not see the parts LLaVA's processor passes)
_TOKENIZER = """{%- set conv = namespace(msgs=[], first=true) -%}
{%- if ns.system is not none -%}{%- set conv.msgs = conv.msgs + [{'role': 'system', 'content': ns.system}] -%}{%- endif -%}
{%- for t in ns.turns -%}""" + _Q + """
{%- set conv.msgs = conv.msgs + [{'role': 'user', 'content': q}] -%}
{%- if t[1] is not none -%}{%- set conv.msgs = conv.msgs + [{'role': 'assistant', 'content': t[1]}] -%}{%- endif -%}
{%- endfor -%}
{%- set messages = conv.msgs -%}
"""


def chat_template(name: str, lead: bool, tokenizer_template: str = "", system: Optional[str] = None) -> str:
    """The Jinja chat template of eim's template ``name``; ``lead``: the tokenizer leads with BOS
    (eim adds it; the hand-written templates write it); ``tokenizer_template``: the LLM tokenizer's
    own template, for ``tokenizer``; ``system``: the run's system line (``data.system``) where it
    replaces the template's (a conversation's own system message still wins)."""
    read = _READ if system is None else _READ.replace("namespace(system=none,", f"namespace(system={system!r},")
    if name == "tokenizer":
        return read + _TOKENIZER + tokenizer_template
    return (read + _EMIT[name]).replace("@@BOS@@", "bos_token" if lead else "''") \
        .replace("@@VICUNA@@", repr(VICUNA_SYSTEM)).replace("@@LLAMA2@@", repr(LLAMA_2_SYSTEM)) \
        .replace("@@CHATML@@", repr(CHATML_SYSTEM))
