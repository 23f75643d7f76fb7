"""``eim chat CHECKPOINT [--image PATH] [--prompt TEXT] [--max-new-tokens N]``: talk to a trained model.

With ``--prompt`` it answers once (greedy) and prints the answer as its last line. Without it,
it reads one question per line from stdin and streams each answer's tokens as they are decoded
(transformers' ``TextStreamer``); the conversation carries over from turn to turn, as in the
LLaVA-format training data (docs/design.md §12). Lines starting with ``/``: ``/image PATH``
starts a conversation about another image, ``/reset`` forgets the turns, ``/quit`` (or end of
input) stops.

    eim chat RUN_DIR --image IMAGE
    eim chat RUN_DIR --image IMAGE --prompt TEXT
"""

import sys

from transformers import TextStreamer

from eim.chat import Chat
from eim.cli_help import verb_help
from eim.errors import EIMError


def add_parser(sub):
    p = sub.add_parser("chat", help="chat with a trained checkpoint about an image (streamed, or one-shot)",
                       **verb_help(
        "Talk with a trained checkpoint about an image. With --prompt it answers once (greedy) and "
        "prints the answer as its last line. Without it, it reads one question per line from stdin "
        "and streams each answer as it is decoded; the conversation carries over from turn to turn. "
        "In the conversation, /image PATH starts one about another image, /reset forgets the turns "
        "and /quit (or the end of input) stops.",
        'eim chat runs/llava --image data/coco/images/test/shapes_test_000000.png --prompt "What is shown here?"',
        "eim chat runs/llava --image IMAGE                      # a conversation, one question per line"))
    p.add_argument("checkpoint", help="run folder (its last stage), stage folder or model.safetensors")
    p.add_argument("--image", default=None, help="the image the conversation is about (none: text only)")
    p.add_argument("--prompt", default=None, help="answer this once and exit (the answer is the last line)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the recipe's generation.max_new_tokens")
    p.set_defaults(func=run)


def run(args):
    chat = Chat.load(args.checkpoint, max_new_tokens=args.max_new_tokens)
    chat.reset(args.image)
    if args.prompt is not None:
        print(chat.ask(args.prompt))
        return 0
    interactive = sys.stdin.isatty()
    if interactive:
        print("eim chat: one question per line; /image PATH, /reset, /quit", flush=True)
    while True:
        if interactive:
            print("you> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line or line.strip() == "/quit":
            return 0
        line = line.strip()
        if not line:
            continue
        try:
            if line.startswith("/image"):
                chat.reset(line[len("/image"):].strip() or None)
                print(f"[image: {chat.image}]", flush=True)
            elif line == "/reset":
                chat.reset(chat.image)
                print("[conversation reset]", flush=True)
            else:
                chat.ask(line, streamer=TextStreamer(chat.tok, skip_prompt=True, skip_special_tokens=True))
        except EIMError as e:  # a bad path or an empty question: say so and keep the conversation
            print(f"eim chat: {e}", file=sys.stderr, flush=True)
