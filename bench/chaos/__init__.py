"""`circ bench chaos`: a real instance under load while a seeded schedule kill -9s its processes.

``procs`` finds this instance's processes in /proc, ``load`` is the scripted
user (chat turns, recalls, imports, forgets, sleeps), ``kills`` the kill
schedule, ``watch`` samples ``adapters/current`` and the heavy-run lock while
it all runs, and ``checks`` judges the log, memory and processes afterwards.
"""
