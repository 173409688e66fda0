"""The application: wiring the stages together.

``pipeline`` owns the threads (capture -> inference -> sinks), ``ui`` is the
OpenCV window, ``cli`` the ``realtime-sam`` command and ``api`` the
streaming Python API (:func:`realtime_sam.track`).
"""
