"""Toxiproxy-compatible TCP fault proxy: server (``python -m chaoslab.drivers.proxy``)
and the ``proxy`` driver that drives it. See ``server`` for the engine, ``api`` for the
HTTP API, ``toxics`` for the toxics, ``driver`` for the chaoslab driver."""
