"""The application: wiring the stages together.

``pipeline`` owns the threads (capture -> inference -> sinks, and the one
thread of a shared encoder), ``ui`` is the OpenCV window, ``cli`` the
``realtime-sam`` command, ``api`` the streaming Python API
(:func:`realtime_sam.track`) and ``annotate`` the dataset flow
(``realtime-sam annotate``, :func:`realtime_sam.annotate`). Several streams
in one process: ``streams`` (what a stream is, its name and output paths),
``scheduler`` (one encoder for all, stalest stream first), ``multi`` (the
streams side by side, :func:`realtime_sam.track_many`), ``multi_cli`` (the
command with several sources), ``grid`` (their window); ``cluster`` runs
them on Ray actors.
"""
