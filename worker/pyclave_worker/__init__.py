"""The code that runs inside pyclave's sandbox: the zygote and the job runner.

The supervisor embeds these files (and `pyclave/_wire.py` as `wire.py`) and
starts `zygote.main` with the control socket on a file descriptor.
"""
