"""The application: wiring the stages together.

``pipeline`` owns the threads (capture -> inference -> sinks), ``ui`` is the
OpenCV window, ``cli`` the ``realtime-sam`` command, ``api`` the
streaming Python API (:func:`realtime_sam.track`) and ``annotate`` the
dataset flow (``realtime-sam annotate``, :func:`realtime_sam.annotate`).
"""
