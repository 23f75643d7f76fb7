"""`eim train` that kills itself with SIGKILL (or meets a full disk) at a chosen point, for
tests/training/test_trainer_crash.py.

    python tests/crash_driver.py SPEC -- <eim train args>

SPEC (stage K, optimiser step S, 1-based; bank part P, 1-based):

- ``none``            train normally (the reference run, in the same kind of process)
- ``step:K:S``        during step S of stage K: after its forward and backward, before the update
- ``checkpoint:K:S``  during the checkpoint write at step S: the model file is written, the
                      optimizer file half written
- ``swap:K:S``        while that checkpoint is swapped in: the old one renamed aside, the new one
                      not yet in place
- ``bank:NAME:P``     during the build of bank NAME, as its part P is being written (parts of 4 rows)
- ``finish:K``        when stage K has written model.safetensors and stage.json, before its folder
                      is moved into place
- ``between:K``       after stage K is in place, before stage K+1 starts
- ``enospc:K:S``      no SIGKILL: the disk is full while the checkpoint at step S is written
- ``fill:K:S``        no SIGKILL: fill the run folder's real filesystem just before that checkpoint

Nothing here is in the library: the driver wraps library functions (as distributed_driver.py does).
"""

import errno
import os
import signal
import sys
from pathlib import Path


def die():
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install(spec):
    import eim.banks as banks
    import eim.commands.train  # noqa: F401  (the verb's module, imported as the CLI would)
    import eim.io as io
    import eim.training.trainer as trainer
    from eim.training.run_dir import RunFolder

    banks.PART_ROWS = 4  # several parts per bank, so a build can stop halfway
    kind, *args = spec.split(":")
    state = {"stage": None, "step": 0}

    real_step = trainer.Trainer._optimizer_step

    def optimizer_step(self, run, batches):
        state["stage"], state["step"] = run.k, run.step + 1
        if kind == "step" and (run.k, run.step + 1) == (int(args[0]), int(args[1])):
            run.opt_p.step = die  # forward and backward of the step run, the update never lands
        return real_step(self, run, batches)

    trainer.Trainer._optimizer_step = optimizer_step

    def at(k, s):
        return (state["stage"], state["step"]) == (int(k), int(s))

    real_save_optimizer = trainer.save_optimizer

    def save_optimizer(opt, prefix, extra):
        if kind == "checkpoint" and at(*args):
            # the model file of checkpoint.tmp is whole; the optimizer file is half written
            real_save_optimizer(opt, prefix, extra)
            path = Path(f"{prefix}.safetensors")
            data = path.read_bytes()
            path.unlink()
            Path(prefix).with_name(f".{path.name}.killed.tmp").write_bytes(data[: len(data) // 2])
            die()
        if kind == "enospc" and at(*args):
            real_atomic = io.atomic_write

            def full(path, write):
                def half(f):
                    f.write(b"\0" * 100)
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return real_atomic(path, half)

            io.atomic_write = full
            try:
                return real_save_optimizer(opt, prefix, extra)
            finally:
                io.atomic_write = real_atomic
        return real_save_optimizer(opt, prefix, extra)

    trainer.save_optimizer = save_optimizer

    real_checkpoint = trainer.Trainer._checkpoint

    def checkpoint(self, run):
        if kind == "fill" and at(*args):
            fill(run.ckpt.parent)
        return real_checkpoint(self, run)

    trainer.Trainer._checkpoint = checkpoint

    real_replace = trainer.replace_dir

    def replace_dir(src, final):
        final = Path(final)
        if kind == "swap" and final.name == "checkpoint" and final.exists() and at(*args):
            final.rename(final.with_name(final.name + ".old"))
            die()
        return real_replace(src, final)

    trainer.replace_dir = replace_dir

    real_save_tensors = banks.save_tensors
    parts = {}

    def save_part(tensors, path, metadata=None):
        path = Path(path)
        if path.parent.name.endswith(".parts"):
            name = path.parent.name[: -len(".parts")]
            parts[name] = parts.get(name, 0) + 1
            if kind == "bank" and (name, parts[name]) == (args[0], int(args[1])):
                die()
        return real_save_tensors(tensors, path, metadata)

    banks.save_tensors = save_part

    real_commit = RunFolder.commit

    def commit(self, k, stage):
        if kind == "finish" and k == int(args[0]):
            die()
        real_commit(self, k, stage)
        if kind == "between" and k == int(args[0]):
            die()

    RunFolder.commit = commit


def fill(folder):
    """Take every free byte of ``folder``'s filesystem but 16 KiB (a real ENOSPC follows)."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with open(Path(folder) / "filler", "wb") as f:
        block = b"\0" * (1 << 16)
        left = free - (16 << 10)
        while left > 0:
            n = min(len(block), left)
            try:
                f.write(block[:n])
                f.flush()
            except OSError:
                break
            left -= n


if __name__ == "__main__":
    spec, rest = sys.argv[1], sys.argv[2:]
    rest = rest[1:] if rest[:1] == ["--"] else rest
    install(spec)  # "none" too: the same bank part size as the killed runs
    from eim.cli import main

    sys.exit(main(["train", *rest]))
