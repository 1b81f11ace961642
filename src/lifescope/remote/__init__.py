"""`lifescope attach ssh://[user@]host[:port]/PID`: the collector on the host, the rest here.

The collector/UI split already draws the line a network needs: the collector does cheap
reads and writes a compact stream, the UI decodes, analyses, renders and records. Here that
stream crosses the user's own `ssh` client (their config, keys, agent, jump hosts):

* `spec` parses the target; `transport` builds the `ssh` command line and the POSIX shell
  line the host runs (find a CPython 3.8+, then hand it `boot`);
* `boot` runs on the host, sent over the channel: it uses an installed lifescope of this
  exact version, or asks for the bundle (`bundle`: the collector's modules and the py-spy
  binary in one zip) and unpacks it into a private 0700 directory it removes on exit;
* `agent` runs the collector there and ends it when the channel closes (stdin EOF, EPIPE,
  or the session's process dying), so nothing outlives the session on the host;
* `link` is the local side: one connection (`RemoteCollector`), and the session that
  reconnects with back-off, marks each outage (`samples.LinkGap`) and records locally.

`boot`, `agent` and `compat` run on the host's Python, which may be 3.8: 3.8 syntax there.
"""
