"""``portico serve --workers N``: several gateway processes on one machine, supervised.

The supervisor (:mod:`~portico.supervisor.supervise`) checks the config, migrates the store and
records the config revision once, binds the listening sockets once, and starts N gateway
processes (:mod:`~portico.supervisor.worker`) that inherit those sockets and share their accept
queues. It replaces a process that dies, reloads them all on SIGHUP or a file edit (after checking
the file once), drains them all on SIGINT or SIGTERM, and serves the operations listener for all
of them: counters summed from every process (:mod:`~portico.supervisor.counters`,
:mod:`~portico.supervisor.collector`), readiness only when every process is ready. The two sides
talk over one Unix socket pair per process (:mod:`~portico.supervisor.channel`).
"""
