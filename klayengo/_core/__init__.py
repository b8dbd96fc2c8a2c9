"""Sans-I/O decision code: no transports, no sleeping, no awaiting, no prometheus.

Everything here is a function of ``(state, input, now)``; time is injected.
"""
