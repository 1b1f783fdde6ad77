"""`apiusage demo`: the whole usage-analytics loop on one machine, without Docker.

* ``command``: the ``demo`` subcommand and its options (registered by ``cli.py``);
* ``ports``: the loopback ports, checked before anything starts;
* ``children``: child processes in their own process groups, stopped as a whole;
* ``backfill``: weeks of simulated history sent to the processor as OTLP spans;
* ``stack``: the Prometheus and Alertmanager configuration written for the run;
* ``summary``: the live summary read from the processor and Prometheus;
* ``demo``: the orchestration.
"""
