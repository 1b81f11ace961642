"""An `ssh` stand-in that runs the remote command on this machine with `sh`, for the one test
that needs a host Python this machine's test users cannot reach (pyenv's 3.8 lives under
/root). Everything after the transport — the shell line, boot, bundle, agent, collector — is
the real thing; the transport itself is tested through a real sshd in test_ssh.py.

Usage (as `LIFESCOPE_SSH`): python local_shell.py [ssh options] -- DESTINATION COMMAND
"""

import os
import sys

args = sys.argv[1:]
command = args[args.index("--") + 2]
os.execv("/bin/sh", ["sh", "-c", command])
